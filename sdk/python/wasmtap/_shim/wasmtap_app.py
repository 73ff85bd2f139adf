"""The component's entry module (componentize-py's APP): imports the
project's `plugin` module, which calls `wasmtap.export(...)`."""

import plugin  # noqa: F401  (the decoder registers itself)
from wasmtap._component import Decoder  # noqa: F401  (the exported interface)
