"""Text missing at test time (CMVAE paper, Table 5): the CMVAE trained as usual, with captions and
sub-sampled training, then queried with the visual modality alone. Sub-sampled training exists so that
one trained model serves videos with and without text; the table measures that, so the weights and the
model selection are CMVAE's own. Retraining with `inference_text: false` would not give the same model:
validation Recall (model selection) reads video_embedding, which would then ignore text too."""
from __future__ import annotations

import dataclasses

from pipeline.models.cmvae import CMVAE


def text_missing_at_test(model: CMVAE) -> CMVAE:
    """A copy of the trained `model` (CMVAE or a subclass such as DebCM) with the same weights, scaling and
    buffers whose video_embedding ignores text; saving it records inference_text: false in its config."""
    config = dataclasses.replace(model.config, inference_text=False)
    copy = type(model)(model.visual_dim, model.music_dim, model.text_dim, config)
    copy.load_state_dict(model.state_dict())
    return copy.train(model.training)
