# Sourced by the GPU scripts (gpu_check.sh, gpu_metaworld_levers.sh) from
# the repository root of a lent device: unpacks the carried EGL loader debs (.gl) and installs the
# carried wheels (.whl) into /tmp/site. A stamp named after the wheel set skips this when the same
# wheels are already installed (a second script in the same call); other wheels, or a failed
# install, run it again.
stamp=/tmp/site/.installed-$(ls .whl | sha1sum | cut -c1-12)
if [ ! -e "$stamp" ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && touch "$stamp"
fi
