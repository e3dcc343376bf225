#!/usr/bin/env bash
# Makes real Fashion-MNIST available offline in $ADACORR_FASHION_MNIST_DIR
# (default /usr/share/datasets/fashion-mnist) from Debian's `dataset-fashion-mnist`.
# If apt is not usable, says so: the loader then reads tfds's prepared `fashion_mnist`
# (in $TFDS_DATA_DIR or ~/tensorflow_datasets) and downloads it only when asked
# (download=True, or `download = True` in a config; needs internet).
set -u
dir="${ADACORR_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
have_all() { for f in "${files[@]}"; do [ -f "$dir/$f" ] || return 1; done; }

if have_all; then echo "Fashion-MNIST: found in $dir"; exit 0; fi
if [ "$dir" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo="sudo -n"; }
  if [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; then
    echo "Fashion-MNIST: installing Debian package dataset-fashion-mnist ..."
    $sudo apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1
    if have_all; then echo "Fashion-MNIST: installed in $dir"; exit 0; fi
  fi
fi
echo "Fashion-MNIST: not in $dir and apt could not install dataset-fashion-mnist;" \
     "the loader will look for tfds's prepared fashion_mnist instead, and download it only" \
     "when asked (download=True / config.download = True; needs internet)." >&2
exit 0
