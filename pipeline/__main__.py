"""`python -m pipeline <command>`: the user-facing commands (today: recommend)."""
import sys

COMMANDS = ("recommend",)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m pipeline {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    from pipeline.recommend import main as recommend
    return recommend(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
