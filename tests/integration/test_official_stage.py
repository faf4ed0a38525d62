"""The import-official stage: local folders, and object-store source and output against the real store."""

import json

import pytest
import yaml

from tests.unit.test_official_layout import TINY_SAM2, write_official_folder
from vesselseg.config import load_config
from vesselseg.model import Sa2VAModel, Sa2VAProcessor
from vesselseg.model.official import REPORT
from vesselseg.stages import import_official
from vesselseg.storage import ObjectStore, fetch_dir, read_manifest


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_official_folder(tmp_path_factory.mktemp("stage") / "Sa2VA-tiny", "internlm2", "safetensors")


def test_cli_config_imports_a_local_folder(official, tmp_path):
    """As `vesselseg import-official config.yaml --set src=… --set out=…` reads its config."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"sam2_config": TINY_SAM2.to_dict()}))
    overrides = [f"src={official.path}", f"out={tmp_path / 'native'}"]
    result = import_official.run(load_config(import_official.Config, tmp_path / "config.yaml", overrides))
    assert result.model is None and result.out == str(tmp_path / "native")
    assert (result.family, result.release, result.initialised_tensors) == ("internlm2", None, 0)
    assert result.mapped_tensors + result.ignored_tensors == len(official.tensors)
    model, loading = Sa2VAModel.from_pretrained(tmp_path / "native", output_loading_info=True)
    assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert sum(p.numel() for p in model.parameters()) == result.parameters
    assert json.loads((tmp_path / "native" / REPORT).read_text())["family"] == "internlm2"


def test_object_store_source_and_output(official, store: ObjectStore, prefix: str, tmp_path):
    for path in official.path.iterdir():
        store.upload_file(path, f"{prefix}/official/{path.name}")
    config = import_official.Config(
        src=store.uri(f"{prefix}/official/"), out=store.uri(f"{prefix}/native/"), sam2_config=TINY_SAM2.to_dict()
    )
    result = import_official.run(config, store)
    manifest = read_manifest(store, result.model)
    assert (manifest.kind, manifest.stage, manifest.summary["family"]) == ("model", "import-official", "internlm2")
    assert {"config.json", "tokenizer.json", REPORT} <= {f.path for f in manifest.files}
    fetch_dir(store, result.model, tmp_path / "fetched")
    model, loading = Sa2VAModel.from_pretrained(tmp_path / "fetched", output_loading_info=True)
    assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    processor = Sa2VAProcessor.from_pretrained(tmp_path / "fetched")
    assert processor.tokenizer.convert_tokens_to_ids("[SEG]") == model.config.seg_token_id
