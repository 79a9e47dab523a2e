"""`python -m pipeline.models.baselines`: every registered variant (kind, data setting, teacher, paper row);
`--names` prints them as one flow list for `dvc exp run -S baselines.variants=...` (`make repro-all`). Both are
derived from the registry (pipeline/models/variants.py), which discovers every model module."""
import argparse

from pipeline.models.variants import baselines, names, registered


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--names", action="store_true", help="print [name,name,...] of every baseline")
    args = ap.parse_args(argv)
    if args.names:
        print("[" + ",".join(baselines()) + "]")
        return
    specs = registered()
    for spec in (specs[name] for name in names()):
        setting = spec.data + (" (union)" if spec.union else "") + (f", from {spec.base}" if spec.base else "")
        print(f"{spec.name:22s} {spec.kind:12s} {setting:28s} {spec.table}: {spec.row}\n{'':22s} {spec.doc}")


if __name__ == "__main__":
    main()
