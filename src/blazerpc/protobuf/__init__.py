"""Protobuf schema of a registry: descriptors built at runtime, the .proto text, and codecs."""
