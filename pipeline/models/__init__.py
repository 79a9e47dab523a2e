"""Models with the common surface: encode_video/encode_music -> Gaussian, *_embedding, score, loss."""
