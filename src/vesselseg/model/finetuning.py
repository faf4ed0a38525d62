"""What trains: the config's freezing switches and LoRA on the LLM, applied to a built model.

Sa2VA's recipe (the config defaults): vision tower frozen, LLM frozen with LoRA (plus full copies of
`embed_tokens` and `lm_head`, which learn the new `[SEG]` row), SAM2 image encoder frozen, SAM2 mask decoder,
projector `mlp1` and `text_hidden_fcs` trained; the optional `mask_refiner` (not in Sa2VA) always trains.
Only modules that reach the loss are ever trainable, so every trainable parameter receives a gradient each step
(with multimask output: each candidate's hypernetwork only in steps where its mask is chosen):
  - SAM2's prompt encoder stays frozen: with no points, boxes or masks it only contributes two learned constants;
  - the decoder's IoU and object-score heads stay frozen: no loss reads them (Sa2VA marks them trainable, but
    they never receive a gradient there either);
  - of the decoder's four mask hypernetworks, only those whose masks can be output are trained.
LoRA is applied here rather than at construction, so checkpoints keep plain transformers keys; `merge_lora`
folds it back before saving a Hugging Face folder.
"""

from peft import LoraConfig, PeftModel, get_peft_model

from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.prompts import FORCED_ANSWER


def apply_training_recipe(model: Sa2VAModel) -> Sa2VAModel:
    """Sets `requires_grad` from the config and wraps the LLM with LoRA if `use_llm_lora`; returns the model.

    Fine-tuning here always supervises the fixed answer (vesselseg.finetune), so the config records it: `auto`
    prediction then forces that answer, for an official checkpoint fine-tuned here as for a preset."""
    config = model.config
    config.answer_mode, config.fixed_answer = "forced", FORCED_ANSWER
    if config.use_llm_lora and not config.freeze_llm:
        raise ValueError("use_llm_lora trains adapters on a frozen LLM; set freeze_llm=True or use_llm_lora=False")
    sam = model.grounding_encoder
    model.requires_grad_(False)
    model.vision_model.requires_grad_(not config.freeze_vision_model)
    model.mlp1.requires_grad_(not config.freeze_projector)
    model.language_model.requires_grad_(not config.freeze_llm)
    sam.vision_encoder.requires_grad_(not config.freeze_sam2_encoder)
    sam.no_memory_embedding.requires_grad_(not config.freeze_sam2_encoder)
    model.text_hidden_fcs.requires_grad_(True)
    if model.mask_refiner is not None:
        model.mask_refiner.requires_grad_(True)
    if not config.freeze_sam2_decoder:
        decoder = sam.mask_decoder
        decoder.requires_grad_(True)
        decoder.iou_prediction_head.requires_grad_(False)
        decoder.pred_obj_score_head.requires_grad_(False)
        # Hypernetwork 0 makes the single mask; 1–3 make the multimask candidates.
        for index, hypernetwork in enumerate(decoder.output_hypernetworks_mlps):
            hypernetwork.requires_grad_((index > 0) == config.sam2_multimask_output)
    if config.use_llm_lora:
        model.language_model = get_peft_model(
            model.language_model,
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                modules_to_save=list(config.lora_modules_to_save),
                task_type="CAUSAL_LM",
            ),
        )
    return model


def merge_lora(model: Sa2VAModel) -> Sa2VAModel:
    """Folds LoRA adapters and `modules_to_save` copies into the LLM's plain weights (no-op without LoRA)."""
    if isinstance(model.language_model, PeftModel):
        model.language_model = model.language_model.merge_and_unload()
    return model
