"""The CLIP BPE tokenizer built for the toy world."""

from __future__ import annotations

import pytest

from lcm_plugin.toy import world
from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer, world_words


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(build_tokenizer_files(tmp_path_factory.mktemp("tok")))


def test_round_trip_of_world_captions(tok):
    for i in range(300):
        _, text, _ = world.sample(world.WorldConfig(), "train", i)
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        # CLIP's decoder separates punctuation by a space; undo that one documented difference.
        assert tok.decode(ids, skip_special_tokens=True).replace(" ,", ",") == text


def test_every_world_word_is_one_token(tok):
    for word in world_words():
        assert tok.tokenize(word) == [word + "</w>"], word


def test_unknown_text_falls_back_to_bytes(tok):
    ids = tok("zebra!").input_ids
    assert tok.decode(ids, skip_special_tokens=True).replace(" !", "!") == "zebra!"


def test_pipeline_padding_length(tok):
    assert tok.model_max_length == 77
    batch = tok(
        ["a red circle", ""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
    )
    assert batch.input_ids.shape == (2, 77)


def test_files_are_deterministic(tmp_path):
    a, b = build_tokenizer_files(tmp_path / "a"), build_tokenizer_files(tmp_path / "b")
    for name in ("vocab.json", "merges.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_missing_or_corrupt_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json is missing"):
        load_tokenizer(tmp_path)
    folder = build_tokenizer_files(tmp_path / "t")
    (folder / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt is corrupt"):
        load_tokenizer(folder)
