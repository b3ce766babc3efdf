"""Registration of "LCM Exact" and "LCM Grid" in the WebUI's sampler and scheduler lists (A1111 >= 1.9, Forge).

Imported only inside a WebUI. Registration is idempotent (A1111's "Reload UI" imports ``scripts/*.py`` again) and
refreshes every list and cache the UI and the API read: ``sd_samplers.all_samplers`` / ``all_samplers_map`` /
``samplers_map`` (via ``set_samplers()``; Forge: ``add_sampler``), the cached ``get_sampler_and_scheduler``,
``sd_schedulers.schedulers`` / ``schedulers_map`` (under name and label) and ``k_diffusion_scheduler``.
"""

from __future__ import annotations

import logging

from lcm_plugin.webui.params import (
    SAMPLER_ALIASES,
    SAMPLER_LABEL,
    SCHEDULER_ALIASES,
    SCHEDULER_LABEL,
    SCHEDULER_NAME,
)

logger = logging.getLogger(__name__)


def register_scheduler() -> bool:
    """Add "LCM Grid" to ``modules.sd_schedulers``; False (one log line) on WebUIs without schedulers."""
    try:
        from modules import sd_schedulers
    except ImportError:
        logger.warning(
            "LCM Exact: this WebUI has no scheduler list (A1111 < 1.9); 'LCM Grid' is not added and "
            "'LCM Exact' samples on the LCM grid by itself."
        )
        return False
    from modules import sd_samplers_kdiffusion

    from lcm_plugin.webui.sampler import lcm_grid_scheduler

    if SCHEDULER_NAME not in sd_schedulers.schedulers_map:
        scheduler = sd_schedulers.Scheduler(
            SCHEDULER_NAME,
            SCHEDULER_LABEL,
            lcm_grid_scheduler,
            need_inner_model=True,
            aliases=list(SCHEDULER_ALIASES),
        )
        sd_schedulers.schedulers.append(scheduler)
        sd_schedulers.schedulers_map[SCHEDULER_NAME] = scheduler
        sd_schedulers.schedulers_map[SCHEDULER_LABEL] = scheduler
    table = getattr(sd_samplers_kdiffusion, "k_diffusion_scheduler", None)
    if isinstance(table, dict):
        table[SCHEDULER_NAME] = lcm_grid_scheduler
    return True


def register_sampler() -> None:
    """Add "LCM Exact" to ``modules.sd_samplers`` (Forge's ``add_sampler``, else A1111's lists + ``set_samplers``)."""
    from modules import sd_samplers, sd_samplers_common

    from lcm_plugin.webui.sampler import LCMExactSampler

    data = sd_samplers_common.SamplerData(
        SAMPLER_LABEL, LCMExactSampler, list(SAMPLER_ALIASES), {"scheduler": SCHEDULER_NAME}
    )
    if hasattr(sd_samplers, "add_sampler"):
        sd_samplers.add_sampler(data)
    elif SAMPLER_LABEL not in sd_samplers.all_samplers_map:
        sd_samplers.all_samplers.append(data)
        sd_samplers.all_samplers_map[SAMPLER_LABEL] = data
        sd_samplers.set_samplers()
    cached = getattr(sd_samplers, "get_sampler_and_scheduler", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


def register() -> None:
    """Register the scheduler first (the sampler's default), then the sampler."""
    register_scheduler()
    register_sampler()
