"""The three modalities of multimodal sentiment analysis, in the order msa_jax uses everywhere."""

MODALITIES = ("text", "audio", "vision")
