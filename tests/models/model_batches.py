"""Tiny random batches in the model batch format (pipeline.models.cmvae / debcm docstrings)."""
import torch

VISUAL, TEXT, MUSIC, GENRES = 20, 12, 10, 6


def random_batch(n: int = 24, seed: int = 0, n_music: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.rand(n, generator=g) > 0.3
    text = torch.randn(n, TEXT, generator=g) * text_mask.unsqueeze(1)  # zeros where missing
    music_idx = torch.randint(0, n_music, (n,), generator=g)
    music_table = torch.randn(n_music, MUSIC, generator=g)
    genre_table = torch.softmax(2 * torch.randn(n_music, GENRES, generator=g), dim=1)
    return {
        "visual": torch.randn(n, VISUAL, generator=g),
        "text": text,
        "text_mask": text_mask,
        "music": music_table[music_idx],  # same music -> same features, as in real batches
        "music_idx": music_idx,
        "music_genre": genre_table[music_idx],
        "uploader_dist": torch.softmax(2 * torch.randn(n, GENRES, generator=g), dim=1),
    }
