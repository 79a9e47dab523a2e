"""One timed extraction with whatever `pipeline` is on PYTHONPATH (so two checkouts can be compared A/B).

    PYTHONPATH=<checkout> python tools/ab_extract.py video|rhythm N OUT [RAW]

video: EfficientNet-Lite0 features of the first N videos of RAW/media/video (saved to OUT, .npy); rhythm: the
rhythm table of the first N UGC pairs (OUT, .parquet). Prints {"what", "n", "seconds"}. tools/ab_extract.sh
alternates an old and a new checkout; the extraction A/B table of reports/performance.md came from it.
"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd



def main(what, n, out, RAW):
    if what == "video":
        import torch
        torch.set_num_threads(2)
        from pipeline.features.video import VideoConfig, extract_video_features
        vids = sorted((RAW / "media/video").glob("*.mp4"))[:n]
        paths = {p.stem: str(p) for p in vids}
        t = time.perf_counter()
        ids, X, fail = extract_video_features(paths, VideoConfig(device="cpu"), "fail")
        dt = time.perf_counter() - t
        np.save(out, X)
    else:
        from pipeline.features import rhythm as r
        pairs = pd.read_parquet(RAW / "pairs.parquet")
        pairs = pairs[pairs.kind == "ugc"].sort_values("video_id").head(n)
        vpaths = {v: str(RAW / f"media/video/{v}.mp4") for v in pairs.video_id}
        mpaths = {m: str(next((RAW / "media/music").glob(f"{m}.*"))) for m in pairs.music_id}
        t = time.perf_counter()
        table, _ = r.rhythm_table(pairs, vpaths, mpaths, workers=2, on_error="fail")
        dt = time.perf_counter() - t
        table.to_parquet(out)
    print(json.dumps({"what": what, "n": n, "seconds": dt}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4] if len(sys.argv) > 4 else "data/raw").resolve())
