"""Official tokenizers without remote code: ids kept, the sentencepiece conversion checked on its own vocabulary."""

import json

import pytest
from test_official_layout import (
    CORPUS,
    REMOTE_CODE,
    executed_files,
    internlm2_spm,
    qwen2_tokenizer,
    write_internlm2_tokenizer,
    write_qwen2_tokenizer,
)
from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers.convert_slow_tokenizer import import_protobuf

from vesselseg.model import prompts
from vesselseg.model.official import FAMILIES, OfficialImportError
from vesselseg.model.official.tokenizer import (
    KEPT_TOKENS,
    load_official_tokenizer,
    spm_to_fast,
)

PROMPT = prompts.user_turn(prompts.segmentation_prompt("the retinal vessels")) + prompts.assistant_reply(
    prompts.FORCED_ANSWER
)


@pytest.fixture()
def internlm2_folder(tmp_path):
    write_internlm2_tokenizer(tmp_path)
    for name in REMOTE_CODE:
        (tmp_path / name).write_text("from pathlib import Path\nPath(__file__).with_suffix('.executed').touch()\n")
    return tmp_path


def test_sentencepiece_conversion_keeps_every_id_and_round_trips(internlm2_folder):
    tokenizer, report = load_official_tokenizer(internlm2_folder, FAMILIES["internlm2"])
    declared = {
        e["content"]: int(i)
        for i, e in json.loads((internlm2_folder / "tokenizer_config.json").read_text())["added_tokens_decoder"].items()
    }
    assert all(tokenizer.convert_tokens_to_ids(token) == token_id for token, token_id in declared.items())
    assert report.source.startswith("tokenizer.model") and report.declared_tokens == len(declared)
    assert report.word_pieces_checked > 50 and report.word_pieces_round_trip == report.word_pieces_checked
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    for token in (*KEPT_TOKENS[:1], prompts.IM_START, prompts.IM_END):
        assert ids.count(declared[token]) == PROMPT.count(token)
    text = "Please segment the optic disc, 12 vessels."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert tokenizer.eos_token == prompts.IM_END and tokenizer.pad_token == "</s>"
    assert executed_files(internlm2_folder) == []


def test_converted_segmentation_equals_the_bpe_the_vocabulary_was_trained_as(tmp_path):
    """The test's sentencepiece vocabulary comes from a BPE trained with merges; re-deriving merges from the
    piece scores, as the converter does, segments text the same way."""
    trained = Tokenizer(BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trained.train_from_iterator(
        [line.replace("\n", " ") for line in CORPUS], trainers.BpeTrainer(vocab_size=300, show_progress=False)
    )
    (tmp_path / "tokenizer.model").write_bytes(internlm2_spm()[0])
    converted, _ = spm_to_fast(tmp_path / "tokenizer.model", {})
    for line in CORPUS:
        text = line.replace("\n", " ").replace(prompts.SEG, "")
        assert converted.encode(text, add_special_tokens=False).tokens == trained.encode(text).tokens, text


def test_a_vocabulary_that_does_not_round_trip_is_refused(internlm2_folder):
    model = import_protobuf().ModelProto()
    model.ParseFromString((internlm2_folder / "tokenizer.model").read_bytes())
    words = [
        p for p in model.pieces if p.type == model.SentencePiece.NORMAL and p.piece.startswith("▁") and len(p.piece) > 3
    ]
    for piece, text in zip(words[:2], ("▁qqqx", "▁xqqq")):  # word pieces no merge of smaller pieces can build
        piece.piece = text
    (internlm2_folder / "tokenizer.model").write_bytes(model.SerializeToString())
    with pytest.raises(OfficialImportError, match="word pieces encode back to their own id.*qqq"):
        load_official_tokenizer(internlm2_folder, FAMILIES["internlm2"])


def test_declared_ids_must_agree_and_sa2va_tokens_must_be_declared(internlm2_folder):
    added = json.loads((internlm2_folder / "added_tokens.json").read_text())
    added[prompts.SEG] += 1
    (internlm2_folder / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(OfficialImportError, match=r"'\[SEG\]' has id"):
        load_official_tokenizer(internlm2_folder, FAMILIES["internlm2"])
    config = json.loads((internlm2_folder / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {i: e for i, e in config["added_tokens_decoder"].items() if e["content"] != "<vp>"}
    (internlm2_folder / "tokenizer_config.json").write_text(json.dumps(config))
    (internlm2_folder / "added_tokens.json").write_text(
        json.dumps({k: v for k, v in added.items() if k not in ("<vp>", prompts.SEG)})
    )
    with pytest.raises(OfficialImportError, match="declare no id for \\['<vp>'\\]"):
        load_official_tokenizer(internlm2_folder, FAMILIES["internlm2"])


@pytest.mark.parametrize("with_tokenizer_json", [True, False])
def test_qwen2_files_are_reused_with_their_ids(tmp_path, with_tokenizer_json):
    write_qwen2_tokenizer(tmp_path, with_tokenizer_json)
    tokenizer, report = load_official_tokenizer(tmp_path, FAMILIES["qwen2"])
    reference = qwen2_tokenizer()
    assert report.source == (
        "tokenizer.json" if with_tokenizer_json else "vocab.json + merges.txt (Qwen2 byte-level BPE)"
    )
    assert tokenizer(PROMPT, add_special_tokens=False).input_ids == reference.encode(PROMPT).ids
    assert report.token_ids[prompts.SEG] == reference.token_to_id(prompts.SEG)
    assert tokenizer.decode(tokenizer(PROMPT, add_special_tokens=False).input_ids) == PROMPT
