"""Neural networks: the built-in encoders and decoders."""
