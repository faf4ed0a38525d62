"""The official tokenizer as a `PreTrainedTokenizerFast`, with every declared token keeping its id.

Three ways in, by the files the folder has, none of which runs the folder's Python:
- `tokenizer.json`: loaded as it is by `PreTrainedTokenizerFast`;
- `vocab.json` + `merges.txt` (Qwen2's byte-level BPE saved by its slow tokenizer): transformers' `Qwen2Tokenizer`;
- `tokenizer.model` (InternLM2's sentencepiece BPE): converted the way transformers' slow→fast converters do
  (InternLM2's own `InternLM2Converter`: pieces and scores → BPE vocabulary and merges with byte fallback,
  `▁` prepended when the model adds a dummy prefix, spaces → `▁`), parsed with transformers' protobuf schema
  so the `sentencepiece` package is not needed; then checked on its own vocabulary: every id ↔ piece, every
  word piece's text encodes back to that one id (at least `MIN_WORD_ROUND_TRIP` of them: BPE may segment a
  piece's text another way), and text built from the vocabulary decodes back to itself.
Tokens declared in `tokenizer_config.json` (`added_tokens_decoder`), `added_tokens.json` or `tokenizer.json`
(`added_tokens`) must keep their ids; Sa2VA's `[SEG]`, `<p>`, `</p>`, `<vp>`, `</vp>` and the image tokens must be
among them. The end-of-sequence token becomes `<|im_end|>`, where the official template stops generating; the
official stop set (the folder's own EOS, then the template's stop words: `<|im_end|>`, for Qwen also
`<|endoftext|>`) and whether the official `encode` starts with BOS (`add_bos_token`, which InternLM2's tokenizer
defaults to true and Qwen2's lacks) are reported for the model's config.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from tokenizers import AddedToken, Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import generate_merges, import_protobuf

from vesselseg.model import prompts
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.families import Family

# Tokens whose ids the model's embeddings and config depend on.
KEPT_TOKENS = (prompts.SEG, *prompts.REGION_TOKENS, prompts.IMG_CONTEXT, prompts.IMG_START, prompts.IMG_END)
CHAT_TOKENS = (prompts.IM_START, prompts.IM_END)
MIN_WORD_ROUND_TRIP = 0.99
# The official templates' STOP_WORDS (projects/sa2va/hf/models/templates.py), by template name.
TEMPLATE_STOP_WORDS = {"internlm2_chat": (prompts.IM_END,), "qwen_chat": (prompts.IM_END, prompts.PAD)}
SPM_BPE = 2
SPM_NORMAL, SPM_CONTROL, SPM_USER_DEFINED = 1, 3, 4


class TokenizerReport(BaseModel):
    source: str  # which files the tokenizer was built from
    size: int
    token_ids: dict[str, int]  # Sa2VA's and the chat tokens
    declared_tokens: int  # added tokens the folder declares, all at their declared ids
    word_pieces_checked: int = 0  # sentencepiece conversion only: word pieces whose text was encoded again
    word_pieces_round_trip: int = 0
    word_piece_failures: list[str] = []  # a few pieces whose text encodes differently
    prepend_bos: bool = False  # the official `encode` starts with BOS
    stop_tokens: list[str] = []  # the official EOS, then the template's stop words


@dataclass(frozen=True)
class DeclaredToken:
    id: int
    special: bool = True
    normalized: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False

    def added_token(self, content: str) -> AddedToken:
        return AddedToken(
            content, special=self.special, normalized=self.normalized, lstrip=self.lstrip, rstrip=self.rstrip,
            single_word=self.single_word,
        )  # fmt: skip


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OfficialImportError(f"{path}: not valid JSON ({err})") from err


def _flags(entry: dict[str, Any]) -> dict[str, bool]:
    names = ("special", "normalized", "lstrip", "rstrip", "single_word")
    return {name: bool(entry[name]) for name in names if name in entry}


def declared_tokens(folder: Path) -> dict[str, DeclaredToken]:
    """Every added token the folder's files declare, by content; files that disagree on an id are an error."""
    found: dict[str, tuple[DeclaredToken, str]] = {}

    def declare(content: str, token: DeclaredToken, file: str) -> None:
        if content in found and found[content][0].id != token.id:
            raise OfficialImportError(
                f"{folder}: {content!r} has id {found[content][0].id} in {found[content][1]} but {token.id} in {file}"
            )
        if content not in found or file == "tokenizer_config.json":
            found[content] = (token, file)

    if (folder / "tokenizer.json").is_file():
        for entry in _read_json(folder / "tokenizer.json").get("added_tokens", []):
            declare(entry["content"], DeclaredToken(int(entry["id"]), **_flags(entry)), "tokenizer.json")
    if (folder / "added_tokens.json").is_file():
        for content, token_id in _read_json(folder / "added_tokens.json").items():
            declare(content, DeclaredToken(int(token_id)), "added_tokens.json")
    if (folder / "tokenizer_config.json").is_file():
        decoder = _read_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
        for token_id, entry in decoder.items():
            declare(entry["content"], DeclaredToken(int(token_id), **_flags(entry)), "tokenizer_config.json")
    by_id: dict[int, str] = {}
    for content, (token, _) in found.items():
        if token.id in by_id:
            raise OfficialImportError(
                f"{folder}: id {token.id} is declared for both {by_id[token.id]!r} and {content!r}"
            )
        by_id[token.id] = content
    return {content: token for content, (token, _) in found.items()}


def _special_token_names(folder: Path) -> dict[str, str]:
    """bos/eos/unk/pad from special_tokens_map.json, overridden by tokenizer_config.json."""
    names: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / file).is_file():
            data = _read_json(folder / file)
            for field in ("bos_token", "eos_token", "unk_token", "pad_token"):
                value = data.get(field)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    names[field] = value
    return names


def _read_spm(path: Path):
    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError is not importable under one stable name
        raise OfficialImportError(f"{path}: not a sentencepiece model ({err})") from err
    if proto.trainer_spec.model_type != SPM_BPE:
        raise OfficialImportError(f"{path}: a sentencepiece model of type {proto.trainer_spec.model_type}, not BPE")
    return proto


def spm_to_fast(path: Path, declared: dict[str, DeclaredToken]) -> tuple[Tokenizer, Any]:
    """A `tokenizers` BPE equivalent to the sentencepiece model at `path`, with the declared tokens added."""
    proto = _read_spm(path)
    replaced = {token.id: content for content, token in declared.items()}
    # As InternLM2's converter does: a declared token replaces the piece at its id.
    scored = [(replaced.get(i, piece.piece), piece.score) for i, piece in enumerate(proto.pieces)]
    vocab = {piece: i for i, (piece, _) in enumerate(scored)}
    if len(vocab) != len(scored):
        raise OfficialImportError(f"{path}: the vocabulary repeats pieces once declared tokens are placed")
    not_merged = {
        content for i, (content, _) in enumerate(scored) if i in replaced or proto.pieces[i].type != SPM_NORMAL
    }
    merges = generate_merges(vocab, scored, skip_tokens=not_merged)
    tokenizer = Tokenizer(
        BPE(vocab, merges, unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
            byte_fallback=proto.trainer_spec.byte_fallback, dropout=None)
    )  # fmt: skip
    prefix = [normalizers.Prepend("▁")] if proto.normalizer_spec.add_dummy_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # Control and user-defined pieces are matched whole, before normalisation, as sentencepiece does.
    added = {
        content: DeclaredToken(i, special=proto.pieces[i].type == SPM_CONTROL)
        for i, (content, _) in enumerate(scored)
        if proto.pieces[i].type in (SPM_CONTROL, SPM_USER_DEFINED)
    } | declared
    for content, token in sorted(added.items(), key=lambda item: item[1].id):
        tokenizer.add_tokens([token.added_token(content)])
        if tokenizer.token_to_id(content) != token.id:
            raise OfficialImportError(
                f"{path.parent}: {content!r} is declared with id {token.id} but the vocabulary would give it "
                f"{tokenizer.token_to_id(content)} (declared ids must follow the {len(scored)} pieces without gaps)"
            )
    return tokenizer, proto


def _check_spm_round_trip(
    tokenizer: Tokenizer, proto: Any, declared: dict[str, DeclaredToken], report: TokenizerReport
) -> None:
    replaced = {token.id for token in declared.values()}
    wrong = [
        f"{i}: {piece.piece!r} ↔ {tokenizer.id_to_token(i)!r}"
        for i, piece in enumerate(proto.pieces)
        if i not in replaced and (tokenizer.id_to_token(i) != piece.piece or tokenizer.token_to_id(piece.piece) != i)
    ]
    if wrong:
        raise OfficialImportError(f"converted tokenizer renumbers {len(wrong)} pieces, e.g. {wrong[:5]}")
    dummy_prefix = proto.normalizer_spec.add_dummy_prefix
    words = {
        i: piece.piece[1:].replace("▁", " ") if dummy_prefix else piece.piece.replace("▁", " ")
        for i, piece in enumerate(proto.pieces)
        if i not in replaced and piece.type == SPM_NORMAL and (piece.piece.startswith("▁") or not dummy_prefix)
    }
    # Text that contains an added token is split at it before BPE runs, so such pieces cannot come back whole.
    added = [content for content, token in declared.items() if token.id >= len(proto.pieces) or token.id in replaced]
    words = {
        i: text
        for i, text in words.items()
        if text.strip() and text == text.strip() and not any(token in text for token in added)
    }
    encoded = tokenizer.encode_batch(list(words.values()), add_special_tokens=False)
    failures = [
        f"{text!r}: {i} → {encoding.ids}"
        for (i, text), encoding in zip(words.items(), encoded, strict=True)
        if encoding.ids != [i]
    ]
    report.word_pieces_checked, report.word_pieces_round_trip = len(words), len(words) - len(failures)
    report.word_piece_failures = failures[:10]
    if words and report.word_pieces_round_trip < MIN_WORD_ROUND_TRIP * len(words):
        raise OfficialImportError(
            f"converted tokenizer: only {report.word_pieces_round_trip} of {len(words)} word pieces encode back to "
            f"their own id, e.g. {failures[:5]}"
        )
    # Sentences of 64 words, since without a pre-tokenizer BPE works on a whole input at once.
    texts = [" ".join(list(words.values())[i : i + 64]) for i in range(0, len(words), 64)]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    decoded = tokenizer.decode_batch([encoding.ids for encoding in encodings])
    for text, back in zip(texts, decoded, strict=True):
        if back != text:
            position = next((i for i, (a, b) in enumerate(zip(text, back)) if a != b), min(len(text), len(back)))
            raise OfficialImportError(
                f"converted tokenizer does not decode its vocabulary's text back: at character {position}, "
                f"{text[position : position + 40]!r} became {back[position : position + 40]!r}"
            )


def official_bos(folder: Path, family: Family) -> bool:
    """Whether the official tokenizer's `encode` prepends BOS: `add_bos_token` from tokenizer_config.json, else the
    default of the family's tokenizer class (InternLM2Tokenizer: true; Qwen2Tokenizer has no BOS)."""
    config = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    return bool(config.get("add_bos_token", family.name == "internlm2"))


def load_official_tokenizer(
    folder: Path, family: Family, template: str | None = None
) -> tuple[PreTrainedTokenizerFast, TokenizerReport]:
    folder = Path(folder)
    declared = declared_tokens(folder)
    missing = [token for token in KEPT_TOKENS if token not in declared]
    if missing:
        raise OfficialImportError(f"{folder}: the tokenizer files declare no id for {missing}")
    names = _special_token_names(folder)
    proto = None
    if (folder / "tokenizer.json").is_file():
        source = "tokenizer.json"
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    elif family.name == "qwen2" and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        source = "vocab.json + merges.txt (Qwen2 byte-level BPE)"
        tokenizer = Qwen2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    elif (folder / "tokenizer.model").is_file():
        source = "tokenizer.model (sentencepiece, converted)"
        backend, proto = spm_to_fast(folder / "tokenizer.model", declared)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **names)
    else:
        raise OfficialImportError(
            f"{folder}: no tokenizer.json, vocab.json + merges.txt (Qwen2) or tokenizer.model (sentencepiece)"
        )

    wrong = {
        content: (token.id, tokenizer.convert_tokens_to_ids(content))
        for content, token in declared.items()
        if tokenizer.convert_tokens_to_ids(content) != token.id
    }
    if wrong:
        listing = ", ".join(f"{c!r} declared {a}, loaded {b}" for c, (a, b) in list(wrong.items())[:10])
        raise OfficialImportError(f"{folder} ({source}): {len(wrong)} tokens lost their ids: {listing}")
    for token in CHAT_TOKENS:
        ids = tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise OfficialImportError(f"{folder}: {token} is not a single token ({ids}); the chat format needs it")
    official_eos = tokenizer.eos_token
    prepend_bos = official_bos(folder, family)
    if prepend_bos and tokenizer.bos_token_id is None:
        raise OfficialImportError(f"{folder}: add_bos_token is set but the tokenizer has no BOS token")
    stop_words = TEMPLATE_STOP_WORDS.get(str(template or "").replace("-", "_"), (prompts.IM_END,))
    stop_tokens = list(dict.fromkeys([t for t in (official_eos, *stop_words) if t is not None]))
    for token in stop_tokens:
        if len(tokenizer(token, add_special_tokens=False).input_ids) != 1:
            raise OfficialImportError(f"{folder}: stop token {token!r} is not a single token")
    tokenizer.eos_token = prompts.IM_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    report = TokenizerReport(
        source=source,
        size=len(tokenizer),
        token_ids={t: tokenizer.convert_tokens_to_ids(t) for t in (*KEPT_TOKENS, *CHAT_TOKENS)},
        declared_tokens=len(declared),
        prepend_bos=prepend_bos,
        stop_tokens=stop_tokens,
    )
    if proto is not None:
        _check_spm_round_trip(tokenizer.backend_tokenizer, proto, declared, report)
    return tokenizer, report
