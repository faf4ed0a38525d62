"""Tiny official Sa2VA checkpoints and what the official remote code makes of them: the parity test's fixtures.

Runs in a separate virtualenv with the official code's own dependencies (its `pyproject.toml` pins transformers
4.49.0 for the InternVL-based releases, `legacy` extra; peft 0.11.1, timm 1.0.17, torchvision), never in
vesselseg's, and reads the official Python files from a checkout of the public Sa2VA repository; nothing of that
code is copied here. Build the environment once:

    python3.11 -m venv /work/official-venv
    /work/official-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==4.49.0 peft==0.11.1 \\
        timm==1.0.17 einops sentencepiece safetensors pillow==13.0.0
    /work/official-venv/bin/python benchmarks/official_tiny.py --checkout /work/official-sa2va \\
        --out tests/fixtures/official

For each family (`internlm2`: InternLM2 LLM, sentencepiece tokenizer trained here with InternLM2's normaliser
settings; `qwen2`: Qwen2 LLM, byte-level BPE tokenizer.json) it builds `Sa2VAChatModel` from a tiny config, with
SAM2 shrunk through the constructor arguments of the official Hiera, FpnNeck, memory and mask-decoder classes
(`SAM2()` itself takes none, so its three `build_*` methods are replaced by ones passing small sizes; every other
SAM2 setting stays the official one), saves it with the official `save_pretrained` (the official folder layout),
then runs the official `predict_forward` in float32 on the CPU on three images (512², 565×584 as DRIVE, and a
large non-square one) and records, per image: the prompt's token ids, the generated ids, the sha256 of the VLM
tile tensor and of SAM2's input tensor (bytes of the float32 tensors: too large to keep, identical or not), the
[SEG] hidden states, SAM2's low-res logits and the final masks.

The tiny LLM is random, so on its own it would never write [SEG]. Its embeddings are drawn with std 1 and its
layers with std 0.02, so the last hidden state is close to the current token's embedding, and `lm_head` gets one
row per step of a fixed chain of tokens (row of token t+1 = the unit embedding of token t): greedy decoding then
walks that chain, which is 40 word tokens, `[SEG]`, `.`, and a stop token the old native defaults missed
(`</s>` for InternLM2, `<|endoftext|>` for Qwen2). The [SEG] therefore comes after the 32 tokens the old
`max_new_tokens` allowed. Everything else (vision tower, projector, SAM2, the rest of `lm_head`) is random.

CPU shim (the official code assumes CUDA): `torch.Tensor.cuda` returns the tensor on the CPU, and SAM2's
`init_state` stores `cpu` as its devices instead of `cuda`. The official `torch.autocast("cuda", bfloat16)`
around SAM2's decoder is inactive without CUDA (torch warns and disables it), so SAM2 runs in float32 here,
whereas on a GPU the official code decodes masks under bf16 autocast.
"""

import argparse
import hashlib
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

OFFICIAL_MODELS = "projects/sa2va/hf/models"
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
SA2VA_TOKENS = ["[SEG]", "<p>", "</p>", "<vp>", "</vp>"]
IMAGE_SIZES = {"square512": (512, 512), "drive565x584": (565, 584), "wide1600x1000": (1600, 1000)}  # (w, h)
PROMPT = "<image>\nPlease segment the blood vessels in this image."
# Text the tokenizer check encodes with sentencepiece itself: spaces, newlines, tabs, digits, accents, scripts the
# tiny vocabulary lacks (byte fallback), emoji, and the chat, image and [SEG] tokens inline.
TOKENIZER_SAMPLES = [
    "Please segment the blood vessels in this image.",
    " leading space,  two spaces,   three; trailing space ",
    "line one\nline two\n\n\tindented\ttab",
    "digits 0123456789 and 3.14159, 2026-12-05, 1e-3",
    "café naïve Größe façade — “quotes” ‘single’ …",
    "血管分割 сосуды 혈관 οφθαλμός 🩸👁️ 🙂",
    "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nPlease segment it.<|im_end|>\n<|im_start|>assistant\n",
    "Sure, it is [SEG].<|im_end|>",
    "<s>literal bos</s> and <unk> and <p>region</p><vp></vp>",
    "UPPER lower MiXeD snake_case kebab-case CamelCase",
]
CHAIN_WORDS = 40
SEED = 19

# Shrunk SAM2 (official defaults: Hiera-L, embed 144, d_model 256); the input stays 1024 px, which
# `preparing_for_generation` hard-codes.
HIERA = dict(embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3], window_spec=[8, 4, 8, 4],
             window_pos_embed_bkg_spatial_size=[7, 7])  # fmt: skip
D_MODEL = 32
MEMORY_FEEDFORWARD = 64

CORPUS = [
    "Please segment the blood vessels in this image.",
    "Please segment the retinal vessels, the optic disc and the fovea in this image.",
    "Sure, it is [SEG]. The image shows a retinal fundus photograph with arteries and veins.",
    "There is no such object in this image. Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 2026 3.14.",
    "Thin vessels branch from the optic disc; thick ones run along the arcades.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!",
    "Mixed text: café, naïve, Größe, 血管, сосуды, (a) [b] {c} <d> e-f g_h i/j k\\l 50% $5 #1 @x ~y ^z |w",
]


def import_official(checkout: Path):
    """The official `projects/sa2va/hf/models` folder as the package `sa2va_remote` (relative imports need one)."""
    link_root = Path(tempfile.mkdtemp(prefix="sa2va_remote_"))
    (link_root / "sa2va_remote").symlink_to((checkout / OFFICIAL_MODELS).resolve(), target_is_directory=True)
    sys.path.insert(0, str(link_root))
    return {name: importlib.import_module(f"sa2va_remote.{name}") for name in (
        "modeling_sa2va_chat", "configuration_sa2va_chat", "sam2", "tokenization_internlm2")}  # fmt: skip


def install_cpu_shim(sam2) -> None:
    """The documented CPU shim: `.cuda()` keeps tensors on the CPU; SAM2's inference state lives on the CPU."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    original_init_state = sam2.SAM2VideoPredictor.init_state

    def init_state_on_cpu(self, images):
        state = original_init_state(self, images)
        state["device"] = state["storage_device"] = torch.device("cpu")
        return state

    sam2.SAM2VideoPredictor.init_state = init_state_on_cpu


def shrink_sam2(sam2) -> None:
    """SAM2's builders with small sizes, through the official classes' constructor arguments."""

    def build_image_encoder(self):
        channels = [HIERA["embed_dim"] * 2**i for i in range(len(HIERA["stages"]))][::-1]
        trunk = sam2.Hiera(**HIERA)
        position = sam2.PositionEmbeddingSine(num_pos_feats=D_MODEL, normalize=True, scale=None, temperature=10000)
        neck = sam2.FpnNeck(d_model=D_MODEL, position_encoding=position, backbone_channel_list=channels,
                            fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")  # fmt: skip
        return sam2.ImageEncoder(scalp=1, trunk=trunk, neck=neck)

    def build_memory_attention(self):
        def attention(**extra):
            return sam2.RoPEAttention(rope_theta=10000.0, feat_sizes=[64, 64], embedding_dim=D_MODEL, num_heads=1,
                                      downsample_rate=1, dropout=0.1, **extra)  # fmt: skip

        layer = sam2.MemoryAttentionLayer(
            activation="relu", dim_feedforward=MEMORY_FEEDFORWARD, dropout=0.1, pos_enc_at_attn=False,
            d_model=D_MODEL, pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
            self_attention=attention(), cross_attention=attention(rope_k_repeat=True, kv_in_dim=16),
        )  # fmt: skip
        return sam2.MemoryAttention(d_model=D_MODEL, pos_enc_at_input=True, num_layers=1, layer=layer)

    def build_memory_encoder(self):
        position = sam2.PositionEmbeddingSine(num_pos_feats=16, normalize=True, scale=None, temperature=10000)
        downsampler = sam2.MaskDownSampler(embed_dim=D_MODEL, kernel_size=3, stride=2, padding=1)
        block = sam2.CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True)
        fuser = sam2.Fuser(layer=block, num_layers=1)
        return sam2.MemoryEncoder(out_dim=16, position_encoding=position, mask_downsampler=downsampler, fuser=fuser,
                                  in_dim=D_MODEL)  # fmt: skip

    sam2.SAM2.build_image_encoder = build_image_encoder
    sam2.SAM2.build_memory_attention = build_memory_attention
    sam2.SAM2.build_memory_encoder = build_memory_encoder


def internlm2_tokenizer(modules, folder: Path):
    """A sentencepiece BPE trained with InternLM2's normaliser settings, loaded by the official slow tokenizer."""
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), model_type="bpe", vocab_size=420,
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        minloglevel=2,
    )  # fmt: skip
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    tokenizer = modules["tokenization_internlm2"].InternLM2Tokenizer(vocab_file=str(folder / "tokenizer.model"))
    # InternLM2's own tokenizer_config.json declares its chat pieces as added special tokens, so transformers splits
    # them off before sentencepiece runs; so does this one.
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.add_tokens(INTERNVL_TOKENS, special_tokens=True)
    tokenizer.add_tokens(SA2VA_TOKENS, special_tokens=True)
    return tokenizer


def qwen2_tokenizer(folder: Path):
    """A byte-level BPE laid out as Qwen2's (specials after the merges, then InternVL's and Sa2VA's tokens)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    backend = Tokenizer(BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    backend.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=backend, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None)  # fmt: skip
    tokenizer.add_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.add_tokens(INTERNVL_TOKENS, special_tokens=True)
    tokenizer.add_tokens(SA2VA_TOKENS, special_tokens=True)
    return tokenizer


def official_config(modules, family: str, vocab_size: int):
    vision = {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 32,
              "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 448,
              "patch_size": 14, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
              "layer_norm_eps": 1e-6, "hidden_act": "gelu", "drop_path_rate": 0.0, "initializer_factor": 1.0,
              "use_flash_attn": False}  # fmt: skip
    llm = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 8192,
           "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "float32"}  # fmt: skip
    if family == "internlm2":
        # As Sa2VA-26B's InternViT-6B variant: RMSNorm, q/k norm, no qkv bias.
        vision |= {"qkv_bias": False, "qk_normalization": True, "norm_type": "rms_norm", "initializer_factor": 0.1}
        llm |= {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "rms_norm_eps": 1e-5,
                "bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
                "attn_implementation": "eager"}  # fmt: skip
        template = "internlm2_chat"
    else:
        llm |= {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6,
                "use_sliding_window": False, "sliding_window": 8192, "max_window_layers": 2}  # fmt: skip
        template = "qwen_chat"
    return modules["configuration_sa2va_chat"].Sa2VAChatConfig(
        architectures=["Sa2VAChatModel"], vision_config=vision, llm_config=llm, template=template,
        downsample_ratio=0.5, force_image_size=448, select_layer=-1, ps_version="v2", dynamic_image_size=True,
        use_thumbnail=True, min_dynamic_patch=1, max_dynamic_patch=12, use_backbone_lora=0, use_llm_lora=0,
        torch_dtype="float32",
    )  # fmt: skip


def steer(model, tokenizer, chain: list[int]) -> None:
    """Greedy decoding from chain[0] walks `chain` (see the module docstring)."""
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        embed = model.language_model.get_input_embeddings().weight
        embed.copy_(torch.randn(embed.shape, generator=generator))
        head = model.language_model.get_output_embeddings().weight
        for current, following in zip(chain, chain[1:]):
            head[following] += 4.0 * embed[current] / embed[current].norm()


def answer_chain(tokenizer, family: str, last_prompt_token: int) -> list[int]:
    special = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(INTERNVL_TOKENS + SA2VA_TOKENS))
    special |= set(tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]))
    vocabulary = sorted(set(tokenizer.get_vocab().values()) - special - {last_prompt_token})
    words = [i for i in vocabulary if tokenizer.convert_ids_to_tokens(i).strip("▁Ġ").isalpha()]
    rng = np.random.default_rng(SEED)
    picked = [int(i) for i in rng.choice(words, size=CHAIN_WORDS + 1, replace=False)]
    stop = tokenizer.convert_tokens_to_ids("</s>" if family == "internlm2" else "<|endoftext|>")
    dot = picked.pop()
    return [last_prompt_token, *picked, tokenizer.convert_tokens_to_ids("[SEG]"), dot, stop]


def vessel_image(width: int, height: int) -> np.ndarray:
    """A smooth fundus-like picture (disc, dark branches on a red field) that compresses well as PNG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    field = 0.55 + 0.25 * np.cos(3.1 * (u - 0.5)) * np.cos(2.3 * (v - 0.5))
    disc = np.exp(-(((u - 0.7) / 0.08) ** 2 + ((v - 0.45) / 0.1) ** 2))
    vessels = sum(np.exp(-(((v - 0.45 - a * (u - 0.7) - b * np.sin(7 * u)) / 0.012) ** 2))
                  for a, b in ((0.6, 0.02), (-0.5, 0.03), (0.15, -0.02), (-0.1, 0.015)))  # fmt: skip
    red = np.clip(field + 0.4 * disc - 0.35 * vessels, 0, 1)
    green = np.clip(0.45 * field + 0.45 * disc - 0.3 * vessels, 0, 1)
    blue = np.clip(0.2 * field + 0.3 * disc, 0, 1)
    return (np.stack([red, green, blue], axis=-1) * 255).round().astype(np.uint8)


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


class Recorder:
    """Hooks on the official model that keep what each stage produced for one `predict_forward` call."""

    def __init__(self, model):
        self.model, self.data = model, {}
        generate, embeddings = model.generate, model.grounding_encoder.get_sam2_embeddings
        single_frame = model.grounding_encoder.sam2_model._run_single_frame_inference

        def record_generate(**kwargs):
            self.data["input_ids"] = kwargs["input_ids"][0].clone()
            self.data["tiles_sha256"] = sha256(kwargs["pixel_values"])
            self.data["tiles_shape"] = list(kwargs["pixel_values"].shape)
            output = generate(**kwargs)
            self.data["generated_ids"] = output.sequences[0].clone()
            return output

        def record_embeddings(images):
            self.data["sam2_input_sha256"] = sha256(images)
            return embeddings(images)

        def record_single_frame(*args, **kwargs):
            out, low_res = single_frame(*args, **kwargs)
            self.data.setdefault("lowres_logits", []).append(low_res[0, 0].float().clone())
            return out, low_res

        def record_fcs(module, inputs, output):
            self.data["seg_hidden"] = inputs[0].clone()

        model.generate = record_generate
        model.grounding_encoder.get_sam2_embeddings = record_embeddings
        model.grounding_encoder.sam2_model._run_single_frame_inference = record_single_frame
        model.text_hidden_fcs.register_forward_hook(record_fcs)

    def take(self) -> dict:
        data, self.data = self.data, {}
        return data


def build_family(modules, family: str, out: Path) -> dict:
    folder = out / family
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    if family == "internlm2":
        tokenizer = internlm2_tokenizer(modules, folder)
    else:
        tokenizer = qwen2_tokenizer(folder)
    config = official_config(modules, family, vocab_size=len(tokenizer))
    model = modules["modeling_sa2va_chat"].Sa2VAChatModel(config).float().eval()
    text = PROMPT.replace("<image>", "")  # where the prompt ends does not depend on the image
    last = tokenizer.encode(model.template["INSTRUCTION"].format(input=text, round=1, bot_name="BOT"))[-1]
    chain = answer_chain(tokenizer, family, last)
    steer(model, tokenizer, chain)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for code in folder.glob("*.py"):  # the tokenizer saves its class's source beside its files: none of it is kept
        code.unlink()
    model.preparing_for_generation(tokenizer, torch_dtype=torch.float32)
    samples = [{"text": text, "encode": tokenizer.encode(text)} for text in TOKENIZER_SAMPLES]
    if family == "internlm2":  # sentencepiece alone, without transformers' splitting at added tokens
        for sample in samples:
            sample["sentencepiece"] = tokenizer.sp_model.encode(sample["text"])

    recorder = Recorder(model)
    tensors, summary = {}, {"family": family, "chain": chain, "tokenizer_samples": samples, "images": {}}
    for name, (width, height) in IMAGE_SIZES.items():
        array = vessel_image(width, height)
        Image.fromarray(array).save(out / f"{name}.png")
        with torch.no_grad():
            result = model.predict_forward(image=Image.fromarray(array), text=PROMPT, tokenizer=tokenizer)
        data = recorder.take()
        masks = np.stack([m[0] for m in result["prediction_masks"]]) if result["prediction_masks"] else None
        tensors |= {
            f"{name}.input_ids": data["input_ids"].long(),
            f"{name}.generated_ids": data["generated_ids"].long(),
            f"{name}.seg_hidden": data["seg_hidden"].float(),
            f"{name}.lowres_logits": torch.stack(data["lowres_logits"]),
            f"{name}.masks_packed": torch.from_numpy(np.packbits(masks, axis=-1)),  # bits along each row
        }
        summary["images"][name] = {
            "size": [width, height],
            "prediction": result["prediction"],
            "tiles_sha256": data["tiles_sha256"],
            "tiles_shape": data["tiles_shape"],
            "sam2_input_sha256": data["sam2_input_sha256"],
            "masks": len(result["prediction_masks"]),
            "mask_pixels": [int(m.sum()) for m in masks] if masks is not None else [],
        }
        print(f"{family} {name}: {len(data['input_ids'])} prompt ids, {len(data['generated_ids'])} generated, "
              f"{summary['images'][name]['masks']} masks, {result['prediction'][:60]!r}…")  # fmt: skip
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "expected.safetensors"))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, type=Path, help="a checkout of the public Sa2VA repository")
    parser.add_argument("--commit", help="the checkout's commit, recorded with the fixtures (default: git's)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--families", nargs="+", default=["internlm2", "qwen2"], choices=["internlm2", "qwen2"])
    args = parser.parse_args()

    commit = args.commit or subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip() or None  # fmt: skip
    modules = import_official(args.checkout)
    install_cpu_shim(modules["sam2"])
    shrink_sam2(modules["sam2"])
    args.out.mkdir(parents=True, exist_ok=True)
    import transformers

    provenance = {
        "official_repository": "github.com/bytedance/Sa2VA",
        "official_commit": commit,
        "official_code": OFFICIAL_MODELS,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "sam2": {"hiera": HIERA, "d_model": D_MODEL},
        "families": {},
    }
    for family in args.families:
        provenance["families"][family] = build_family(modules, family, args.out)
    (args.out / "expected.json").write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
