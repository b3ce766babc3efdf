"""LCM adapters: a registry of known LCM-LoRAs, download, inspection and lossless kohya <-> diffusers conversion.

Modules: :mod:`registry` (data), :mod:`download` (hub / https, atomic placement), :mod:`inspection`
(format and base-architecture detection), :mod:`convert` (public conversion API), :mod:`formats` and
:mod:`kohya_names` (key naming), :mod:`safetensors_io` (safe reading, atomic writing), :mod:`commands` (CLI).
"""
