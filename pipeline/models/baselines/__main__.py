"""`python -m pipeline.models.baselines`: every registered variant (kind, data setting, teacher, paper row);
`--names` prints them as one flow list for `dvc exp run -S baselines.variants=...` (`make repro-all`)."""
import argparse

from pipeline.models.baselines import BASELINES, REGISTRY


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--names", action="store_true", help="print [name,name,...] of every baseline")
    args = ap.parse_args(argv)
    if args.names:
        print("[" + ",".join(BASELINES) + "]")
        return
    for spec in REGISTRY.values():
        setting = spec.data + (" (union)" if spec.union else "") + (f", from {spec.base}" if spec.base else "")
        print(f"{spec.name:22s} {spec.kind:12s} {setting:28s} {spec.table}: {spec.row}\n{'':22s} {spec.doc}")


if __name__ == "__main__":
    main()
