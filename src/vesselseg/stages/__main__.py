"""`python -m vesselseg.stages`: rewrite contracts.json from the stage modules (after changing a contract)."""

import json

from vesselseg.stages import CONTRACTS_FILE, contracts_data

CONTRACTS_FILE.write_text(json.dumps(contracts_data(), indent=1, sort_keys=True) + "\n")
print(f"wrote {CONTRACTS_FILE}")
