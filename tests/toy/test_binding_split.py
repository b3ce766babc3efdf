"""benchmarks/toy_binding.py sorts captions into one object / pair in scene order / pair reversed."""

from __future__ import annotations

from benchmarks.toy_binding import caption_form
from lcm_plugin.toy import world


def test_caption_forms_follow_the_scene():
    cfg = world.WorldConfig()
    forms = {}
    for i in range(300):
        _, caption, scene = world.sample(cfg, "test", i)
        form = caption_form(caption, scene)
        forms[form] = forms.get(form, 0) + 1
        if scene.n_objects == 1:
            assert form == "one object"
        else:
            left_or_upper = f"{scene.colour1} {scene.shape1}"
            other = f"{scene.colour2} {scene.shape2}"
            first_named = left_or_upper if caption.index(left_or_upper) < caption.index(other) else other
            same = left_or_upper == other
            assert form == ("pair, scene order" if first_named == left_or_upper or same else "pair, reversed")
    # The world phrases about half of the pairs each way (world.caption), so both forms must show up.
    assert forms["pair, scene order"] > 20 and forms["pair, reversed"] > 20
