"""The genre labeller of TT-150k-genre: an LSTM over per-frame audio features, and a musicnn-tag mapping."""
