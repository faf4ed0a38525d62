"""Official Sa2VA checkpoints (Hugging Face folders) imported into the native model, without remote code.

    import_official(src, out)       → a native `save_pretrained` folder + mapping_report.json
    load_official("official:<src>") → (Sa2VAModel, Sa2VAProcessor), imported once and cached

See importer.py for the flow, keymap.py for what each tensor becomes, plan.py for the strictness rules.
"""

from vesselseg.model.official.catalog import OFFICIAL_CONFIGS, PUBLISHED_SIZES
from vesselseg.model.official.config import identify, sa2va_config
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.families import FAMILIES, detect_family
from vesselseg.model.official.importer import REPORT, ImportReport, import_official
from vesselseg.model.official.load import OFFICIAL, load_official
from vesselseg.model.official.plan import OPTIONAL_PARTS

__all__ = [
    "FAMILIES",
    "OFFICIAL",
    "OFFICIAL_CONFIGS",
    "OPTIONAL_PARTS",
    "PUBLISHED_SIZES",
    "REPORT",
    "ImportReport",
    "OfficialImportError",
    "detect_family",
    "identify",
    "import_official",
    "load_official",
    "sa2va_config",
]
