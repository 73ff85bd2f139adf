"""The exported `decoder` interface's resources (componentize-py looks them
up in a module named after the interface)."""

from wasmtap._component import Session  # noqa: F401
