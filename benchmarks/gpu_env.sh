# Sourced by the benchmarks/gpu_*.sh scripts (from the repository root): offline, unbuffered Python, and the
# packages a lent GPU machine lacks, taken from wheels/zips in .whl/ (unpacked to /tmp/site) when present.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*" >/dev/null; then
  for w in .whl/*; do python3 -m zipfile -e "$w" /tmp/site; done
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
