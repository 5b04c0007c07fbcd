#!/usr/bin/env bash
# Reproduces services/dashboard/src/its_dashboard/static/vendor/ from npm (run after changing
# package.json; commit the result). The page loads only these local files: no CDN, works offline.
#   bash services/dashboard/js/vendor.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/its_dashboard/static/vendor"
cd "$here"
npm ci --no-audit --no-fund --ignore-scripts 2>/dev/null || npm install --no-audit --no-fund --ignore-scripts
pkg="node_modules/lightweight-charts"
mkdir -p "$out"
cp "$pkg/dist/lightweight-charts.standalone.production.js" "$out/lightweight-charts.js"
cp "$pkg/LICENSE" "$out/lightweight-charts.LICENSE"
if [ -f "$pkg/NOTICE" ]; then cp "$pkg/NOTICE" "$out/lightweight-charts.NOTICE"; fi
version="$(node -p "require('./$pkg/package.json').version")"
echo "lightweight-charts $version (Apache-2.0) from npm; built by services/dashboard/js/vendor.sh" \
  > "$out/VERSIONS"
rm -rf node_modules
echo "vendored lightweight-charts $version into $out"
