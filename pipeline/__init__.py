"""bgm-pipeline: background-music recommendation for micro-videos (CMVAE, DebCM) as a DVC pipeline."""

__version__ = "0.1.0"
