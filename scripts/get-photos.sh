#!/usr/bin/env bash
# Training photographs of the shipped photo restorers (aezoo/weights/): 27 photographs from two Debian
# packages, lomiri-wallpapers-16.04 (+ -20.04 for one) and mate-backgrounds, copied into data/photos with
# their authors and licences (SOURCES.md, from the packages' copyright files). Needs no root: the packages
# are downloaded and unpacked, not installed. Illustrations and patterns in those packages are left out.
set -eu
out=${1:-data/photos}
[ -f "$out/SOURCES.md" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds >/dev/null)
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
mkdir -p "$out.part"
lomiri=$tmp/root/usr/share/backgrounds
mate=$tmp/root/usr/share/backgrounds/mate/nature
for f in "$lomiri"/*.jpg; do
  case $(basename "$f") in analogpattern_*|Fossa_*|Infinite-Sea_*|Painting-Colors_*|warty-*) continue ;; esac
  cp "$f" "$out.part/"
done
cp "$mate"/*.jpg "$out.part/"
{
  echo "# Training photographs of aezoo's shipped photo restorers"
  echo
  echo "Copied by scripts/get-photos.sh from Debian's packages lomiri-wallpapers-16.04,"
  echo "lomiri-wallpapers-20.04 and mate-backgrounds. Authors and licences, from the packages' copyright files:"
  echo
  for f in "$out.part"/*.jpg; do
    name=$(basename "$f")
    for c in "$tmp"/root/usr/share/doc/lomiri-wallpapers-16.04/copyright "$tmp"/root/usr/share/doc/lomiri-wallpapers-20.04/copyright "$tmp"/root/usr/share/doc/mate-backgrounds/copyright; do
      block=$(awk -v n="$name" 'BEGIN{RS=""} index($0, "/" n) || index($0, " " n) {print; exit}' "$c")
      if [ -n "$block" ]; then
        echo "- $name: $(echo "$block" | sed -n 's/^Copyright: *//p' | head -1 | tr -d '\r'); $(echo "$block" | sed -n 's/^License: *//p' | head -1)"
        break
      fi
    done
  done
} > "$out.part/SOURCES.md"
rm -rf "$out" && mv "$out.part" "$out"
echo "$(ls "$out"/*.jpg | wc -l) photographs in $out"
