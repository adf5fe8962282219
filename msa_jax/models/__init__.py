"""Flax linen models: the BERT text encoder, LNLN and GEAR."""
