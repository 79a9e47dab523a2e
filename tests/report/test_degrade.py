"""reports/degradations.md (pipeline/report/degrade.py): every skipped or fallen-back part is named with why."""
from pipeline.report.degrade import degradations

FULL = {"schemes": {"weak": {"train": 80, "val": 10, "test": 10}}, "intervene_scheme": "weak", "n_music": 40,
        "n_pool": 36, "n_ugc": 100, "n_pgc": 0, "n_uploaders": 7,
        "diverse": {"uploaders": ["u1", "u2"], "n_candidates": 7, "min_entropy": 1.2, "n_videos": 21},
        "matching": {"rule": "0.5 * popularity rank + 0.5 * rhythm rank", "fallback": False, "n_videos": 25}}


def test_a_clean_run_says_nothing_was_lost():
    text = degradations(FULL, {"labeller": "lstm", "n_uniform": 0}, {"student": {"weak_s0": {}}}, ["student"], {})
    assert "**" not in text  # nothing in bold: nothing degraded
    assert "T_diverse: 21 test videos of weak from 2 uploader(s) (of 7)" in text
    assert "every variant that was asked for trained and was evaluated" in text and "labeller: lstm" in text


def test_every_degradation_is_named_with_its_reason():
    info = dict(FULL, n_uploaders=1, skipped={"strong": "too few music for 5 strata (to drop it, edit split.schemes)"},
                diverse={"skipped": "no test video has an uploader"},
                matching={"rule": "popularity only (no rhythm scores)", "fallback": True, "n_videos": 25},
                negatives_capped={"UGC pool": {"asked": 100, "used": 35, "pool": 36}},
                rhythm_coverage="rhythm scores for 3 of 10 test videos: not used",
                dropped={"videos": ["v1"], "music": [], "pairs": 1})
    summaries = {"teacher": {"skipped": "the source has no PGC pairs"}, "student": {"skipped": "student needs the PGC "
                 "teacher: the source has no PGC pairs"}, "cmvae": {"weak_s0": {}}, "ips": {"weak_s0": {}}}
    genre = {"labeller": "tags", "n_uniform": 12,
             "reason": "12 with neither a shipped genre nor audio get the uniform g(m)"}
    flagged = {("weak", "full", 25): "K = 25 is at least half of the 36 full-protocol candidates",
               ("t_diverse", "full", 10): "21 test videos (< report.min_videos 30)",
               ("t_diverse", "full", 25): "21 test videos (< report.min_videos 30); K = 25 is at least half of the 36 "
                                          "full-protocol candidates"}
    text = degradations(info, genre, summaries, ["cmvae", "decrs"], flagged)
    for expected in ("**skipped strong**: too few music for 5 strata",
                     "**T_diverse skipped**: no test video has an uploader",
                     "**fallen back on popularity alone**", "rhythm scores for 3 of 10 test videos",
                     "**negatives capped** (UGC pool): split.n_negatives = 100 needs 101 music, the pool has 36",
                     "**teacher skipped**: the source has no PGC pairs", "**student skipped**: student needs",
                     "teacher-guided variants (UGC + PGC) are absent", "ips: trained but absent",
                     "**12 music without a genre label**", "labeller: tags",
                     "**one uploader**", "decrs is no_teacher by construction",
                     "(decrs) therefore measure no debiasing",
                     "- **weak — full** ⚠ K = 25 is at least half of the 36 full-protocol candidates\n",
                     "- **t_diverse — full** ⚠ 21 test videos (< report.min_videos 30); K = 25 is at least half of "
                     "the 36 full-protocol candidates\n",
                     "1 video(s), 0 music and 1 pair(s) left the dataset"):
        assert expected in text, expected
