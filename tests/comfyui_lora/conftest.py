"""Fixtures shared with the adapter tests (tiny SD1.5/SDXL/SSD-1B UNets with peft LoRAs)."""

from tests.adapters.conftest import sd15_lora, sdxl_lora, ssd1b_lora  # noqa: F401
