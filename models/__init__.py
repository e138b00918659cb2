"""Shared library of lstm-serve: architectures, tokenizers, the checkpoint format, decoding and
device resolution.

Imported by both `training` and `service`; imports neither.
"""
