#!/usr/bin/env bash
# Training photographs of the photo restorers (aezoo/weights/README.md): 45 photographs from five Debian
# packages, copied into data/photos with their authors and licences in SOURCES.md:
# - lomiri-wallpapers-16.04 (+ -20.04 for one) and mate-backgrounds: 26, from the copyright files
#   (umang_by_Abhishek_Mudgal.jpg, which today's shipped weights saw, is a smooth render: left out now);
# - plasma-workspace-wallpapers: 11, author and licence from each wallpaper's metadata.json (the package's
#   copyright file gives GPL-2+ to all of it);
# - lxqt-themes: 8, author and licence from the credits in its wallpapers/License.
# Illustrations, renders, patterns and logos in those packages are left out (chosen by looking at them),
# and so is any file whose author or licence is not found. Needs no root: the packages are downloaded and
# unpacked, not installed. New files are named "plasma-*" and "lxqt-*" so that, in name order, the
# photographs the patches source held out before (every tenth) are held out still; the script checks it.
set -eu
out=${1:-data/photos}
packages="lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds plasma-workspace-wallpapers lxqt-themes"
grep -qsx "Packages: $packages" "$out/SOURCES.md" && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out.part"' EXIT
(cd "$tmp" && apt-get download -qq $packages >/dev/null)
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
rm -rf "$out.part"
mkdir -p "$out.part"
root=$tmp/root/usr/share
doc=$root/doc
credit() { echo "- $1: $2" >> "$tmp/sources"; }

# lomiri and mate: the Debian copyright file's paragraph that names the file
for f in "$root"/backgrounds/*.jpg "$root"/backgrounds/mate/nature/*.jpg; do
  name=$(basename "$f")
  case $name in analogpattern_*|Fossa_*|Infinite-Sea_*|Painting-Colors_*|umang_*|warty-*) continue ;; esac
  for c in "$doc"/lomiri-wallpapers-16.04/copyright "$doc"/lomiri-wallpapers-20.04/copyright "$doc"/mate-backgrounds/copyright; do
    block=$(awk -v n="$name" 'BEGIN{RS=""} index($0, "/" n) || index($0, " " n) {print; exit}' "$c")
    [ -n "$block" ] || continue
    who=$(echo "$block" | sed -n 's/^Copyright: *//p' | head -1 | tr -d '\r')
    licence=$(echo "$block" | sed -n 's/^License: *//p' | head -1)
    if [ -n "$who" ] && [ -n "$licence" ]; then
      cp "$f" "$out.part/" && credit "$name" "$who; $licence"
    fi
    break
  done
done

# plasma: the largest landscape image of each wallpaper; author and licence from its metadata.json
for n in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  dir=$root/wallpapers/$n
  best=$(for f in "$dir"/contents/images/*; do
           b=$(basename "${f%.*}"); w=${b%x*}; h=${b#*x}
           [ "$w" -gt "$h" ] && echo "$((w * h)) $f"
         done | sort -n | tail -1 | cut -d' ' -f2-)
  who=$(python3 -c 'import json, sys; k = json.load(open(sys.argv[1]))["KPlugin"]
print(", ".join(a["Name"] for a in k.get("Authors", [])) + ";", k.get("License", ""))' "$dir/metadata.json")
  case $who in ";"*|*"; ") continue ;; esac  # no author or no licence
  name=plasma-$n.${best##*.}
  cp "$best" "$out.part/$name" && credit "$name" "$who (its metadata.json; the package's copyright file: GPL-2+)"
done

# lxqt: the wallpapers credited by name in wallpapers/License (file:word of the credits line)
lic=$root/lxqt/wallpapers/License
licence=$(sed -n 's#^Licensed under .*creativecommons.org/licenses/by-sa/3.0/.*#CC BY-SA 3.0#p' "$lic")
for pair in after-the-rain.jpg:after-the-rain appleflower.png:appleflowers beam.png:beam butterfly.png:butterfly \
            drop.png:drop flowers.png:flowers fog.jpg:fog this-is-not-windows.jpg:not-windows; do
  file=${pair%%:*} word=${pair#*:}
  who=$(awk -v w="$word" '{n = split($0, a, /[,;] */); for (i = 1; i <= n; i++) if (a[i] == w) {print prev; exit}} {prev = $0}' "$lic" | sed 's/ *(.*//')
  [ -n "$who" ] && [ -n "$licence" ] || continue
  cp "$root/lxqt/wallpapers/$file" "$out.part/lxqt-$file" && credit "lxqt-$file" "$who; $licence (the package's wallpapers/License)"
done

# the photographs held out before must stay held out (bench/photo_restore.py tunes on them, aezoo demo shows one)
held=$(cd "$out.part" && ls | grep -v '^SOURCES.md$' | LC_ALL=C sort | awk 'NR % 10 == 1')
for must in Aqua.jpg Picture_0B_by_freespace.jpg friends_by_Aitzol_Berasategi.jpg; do
  echo "$held" | grep -qx "$must" || { echo "get-photos: $must would no longer be held out" >&2; exit 1; }
done
{
  echo "# Training photographs of aezoo's photo restorers"
  echo
  echo "Copied by scripts/get-photos.sh from Debian's packages" \
       "$(for deb in "$tmp"/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}' "$deb"; echo; done | paste -sd',' | sed 's/,/, /g')."
  echo
  echo "Packages: $packages"
  echo
  echo "Held out of training by the patches source (every tenth in name order): $(echo $held | sed 's/ /, /g')."
  echo
  echo "Authors and licences:"
  echo
  LC_ALL=C sort "$tmp/sources"
} > "$out.part/SOURCES.md"
rm -rf "$out" && mv "$out.part" "$out"
echo "$(grep -c '^- ' "$out/SOURCES.md") photographs in $out"
