# Sourced by the GPU scripts (gpu_check.sh, gpu_imitation_budget.sh, gpu_metaworld_levers.sh) from
# the repository root of a lent device: unpacks the carried EGL loader debs (.gl) and installs the
# carried wheels (.whl) into /tmp/site, once per machine (a second script in the same call skips it).
if [ ! -d /tmp/site ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
