#!/usr/bin/env bash
# Installs florence-edge as a systemd service (Jetson / any systemd Linux), or removes it. Idempotent: running it
# again upgrades the program, rewrites the unit, and keeps the existing config, env file, state and cache.
#
#   sudo scripts/install-service.sh [--enable] [--start]      install from this checkout (build it first)
#   sudo scripts/install-service.sh --uninstall [--purge]      remove (--purge: config, state and cache too)
#   scripts/install-service.sh --dry-run ...                   print what would be done, change nothing
#   scripts/install-service.sh --root /tmp/stage ...           install under a staging root (DESTDIR-like):
#                                                              no systemctl, no user creation, no root needed
# Options:
#   --prefix DIR     program location (default /usr/local/lib/florence-edge): DIR/app holds the package,
#                    DIR/bin/florence-edge the launcher the unit runs
#   --node PATH      node binary the launcher uses (default: `command -v node`; Node >= 20)
#   --deps MODE      npm: `npm ci --omit=dev` (default, needs the registry or npm's cache)
#                    copy: this checkout's node_modules, dev packages pruned (offline)
#                    none: leave node_modules to you (packaging)
#   --user NAME      service user (default florence-edge), a system user in the video and render groups
#   --enable         enable at boot          --start   start now (restart when already running)
#   --no-link        do not create /usr/local/bin/florence-edge
#
# Layout: PREFIX/{app,bin}, /etc/systemd/system/florence-edge.service, /etc/sysusers.d/florence-edge.conf,
# /etc/tmpfiles.d/florence-edge.conf, /etc/florence-edge/{config.yaml,env}; at run time systemd creates /var/lib/florence-edge (state, the user's
# home) and /var/cache/florence-edge (hub downloads and TensorRT engines, FLORENCE_EDGE_CACHE).
set -euo pipefail

PROGRAM=florence-edge
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_PREFIX=/usr/local/lib/florence-edge

PREFIX="$DEFAULT_PREFIX"
ROOT=""
NODE=""
DEPS=npm
SERVICE_USER=florence-edge
ENABLE=0
START=0
LINK=1
UNINSTALL=0
PURGE=0
DRY_RUN=0

die() {
  echo "install-service: $*" >&2
  exit 2
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --node) [ $# -ge 2 ] || die "--node needs the path of the node binary"; NODE="$2"; shift 2 ;;
    --node=*) NODE="${1#*=}"; shift ;;
    --deps) [ $# -ge 2 ] || die "--deps needs npm, copy or none"; DEPS="$2"; shift 2 ;;
    --deps=*) DEPS="${1#*=}"; shift ;;
    --user) [ $# -ge 2 ] || die "--user needs a name"; SERVICE_USER="$2"; shift 2 ;;
    --user=*) SERVICE_USER="${1#*=}"; shift ;;
    --enable) ENABLE=1; shift ;;
    --start) START=1; shift ;;
    --no-link) LINK=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --dry-run|-n) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# --- checks on the arguments -----------------------------------------------------------------------------------
case "$PREFIX" in
  /*) ;;
  *) die "--prefix must be an absolute path, got '$PREFIX'" ;;
esac
PREFIX="${PREFIX%/}"
[ -n "$PREFIX" ] && [ "$PREFIX" != "/usr" ] && [ "$PREFIX" != "/usr/local" ] && [ "$PREFIX" != "/opt" ] ||
  die "--prefix '$PREFIX' is a system directory; use a directory of its own such as $DEFAULT_PREFIX"
case "$PREFIX" in
  *[[:space:]\'\"\\%\$\|\&]*) die "--prefix '$PREFIX' contains a space, quote, backslash, %, \$, | or &; systemd and the launcher need a plain path" ;;
esac
if [ -n "$ROOT" ]; then
  case "$ROOT" in
    /*) ;;
    *) die "--root must be an absolute path, got '$ROOT'" ;;
  esac
  ROOT="${ROOT%/}"
  [ -n "$ROOT" ] || die "--root / is the live system: leave --root out instead"
fi
case "$DEPS" in
  npm|copy|none) ;;
  *) die "--deps must be npm, copy or none, got '$DEPS'" ;;
esac
[[ "$SERVICE_USER" =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die "--user '$SERVICE_USER' is not a valid user name (lower case letters, digits, _ and -)"
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"

APP="$PREFIX/app"
LAUNCHER="$PREFIX/bin/$PROGRAM"
UNIT_PATH=/etc/systemd/system/$PROGRAM.service
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/$PROGRAM.service
SYSUSERS_PATH=/etc/sysusers.d/$PROGRAM.conf
TMPFILES_PATH=/etc/tmpfiles.d/$PROGRAM.conf
CONFIG_DIR=/etc/$PROGRAM
BIN_LINK=/usr/local/bin/$PROGRAM
MARKER="$PREFIX/.installed-by-florence-edge"

# --- actions: each prints what it does; under --dry-run it only prints ----------------------------------------
say() { echo "$*"; }
# The live or staged path of a system path.
dest() { echo "$ROOT$1"; }

run() {
  if [ "$DRY_RUN" = 1 ]; then
    say "would run: $*"
  else
    say "+ $*"
    "$@"
  fi
}

# write_file PATH MODE < content; PATH is a system path (the staging root is added)
write_file() {
  local path="$1" mode="$2" target content
  target="$(dest "$path")"
  content="$(cat)"
  if [ "$DRY_RUN" = 1 ]; then
    say "would write: $target (mode $mode)"
    return
  fi
  mkdir -p "$(dirname "$target")"
  if [ -f "$target" ] && [ "$(cat "$target")" = "$content" ]; then
    chmod "$mode" "$target"
    say "unchanged: $target"
    return
  fi
  printf '%s\n' "$content" >"$target.tmp.$$"
  chmod "$mode" "$target.tmp.$$"
  mv -f "$target.tmp.$$" "$target"
  say "wrote: $target"
}

# write_if_absent PATH MODE < content: config the administrator may have edited is never overwritten
write_if_absent() {
  local path="$1" target
  target="$(dest "$path")"
  if [ -e "$target" ]; then
    cat >/dev/null
    say "kept: $target (exists)"
    return
  fi
  write_file "$@"
}

remove() {
  local target
  target="$(dest "$1")"
  if [ -e "$target" ] || [ -L "$target" ]; then
    if [ "$DRY_RUN" = 1 ]; then say "would remove: $target"; else rm -rf -- "$target"; say "removed: $target"; fi
  fi
}

systemctl_live() {
  # a staging root is never the running system: systemctl is only for live installs
  if [ -n "$ROOT" ]; then
    say "skipped (--root): systemctl $*"
    return 0
  fi
  run systemctl "$@"
}

need_root() {
  if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "installing into the live system needs root: run it with sudo (or use --dry-run / --root DIR)"
  fi
}

# --- uninstall ------------------------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
  need_root
  if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
    if [ "$DRY_RUN" = 1 ]; then
      say "would run: systemctl disable --now $PROGRAM.service"
    else
      say "+ systemctl disable --now $PROGRAM.service"
      systemctl disable --now "$PROGRAM.service" 2>/dev/null || true
    fi
  else
    remove "$WANTS_LINK"
  fi
  remove "$UNIT_PATH"
  remove "$SYSUSERS_PATH"
  remove "$TMPFILES_PATH"
  if [ -L "$(dest "$BIN_LINK")" ] && [ "$(readlink "$(dest "$BIN_LINK")")" = "$LAUNCHER" ]; then remove "$BIN_LINK"; fi
  if [ -e "$(dest "$PREFIX")" ]; then
    # only a directory this script installed is deleted wholesale
    [ -e "$(dest "$MARKER")" ] || die "$(dest "$PREFIX") was not installed by this script (no $(basename "$MARKER")); remove it yourself"
    remove "$PREFIX"
  fi
  if [ "$PURGE" = 1 ]; then
    remove "$CONFIG_DIR"
    remove "/var/lib/$PROGRAM"
    remove "/var/lib/private/$PROGRAM"
    remove "/var/cache/$PROGRAM"
    remove "/var/cache/private/$PROGRAM"
  else
    say "kept: $(dest "$CONFIG_DIR"), $(dest "/var/lib/$PROGRAM"), $(dest "/var/cache/$PROGRAM") (--purge removes them)"
  fi
  systemctl_live daemon-reload
  if [ "$DRY_RUN" = 1 ]; then say "dry run: nothing was removed"; else say "florence-edge service removed; the user '$SERVICE_USER' is kept (files it owns may remain)"; fi
  exit 0
fi

# --- install --------------------------------------------------------------------------------------------------
need_root
[ -f "$SOURCE_DIR/package.json" ] && grep -q '"name": "florence-edge"' "$SOURCE_DIR/package.json" ||
  die "$SOURCE_DIR is not a florence-edge checkout (no package.json named florence-edge)"
[ -f "$SOURCE_DIR/dist/src/bin.js" ] || die "$SOURCE_DIR/dist/src/bin.js is missing: build first with 'npm ci && npm run build'"
[ -f "$SOURCE_DIR/systemd/$PROGRAM.service" ] || die "$SOURCE_DIR/systemd/$PROGRAM.service is missing"

if [ -z "$NODE" ]; then
  NODE="$(command -v node || true)"
  [ -n "$NODE" ] || die "node is not on PATH: install Node.js >= 20 (NodeSource or nvm) or pass --node /path/to/node"
fi
case "$NODE" in
  /*) ;;
  *) die "--node must be an absolute path, got '$NODE'" ;;
esac
if [ -z "$ROOT" ]; then
  [ -x "$NODE" ] || die "--node '$NODE' is not an executable file"
  node_major="$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  [ "$node_major" -ge 20 ] 2>/dev/null || die "$NODE is Node $node_major; florence-edge needs Node >= 20"
  case "$NODE" in
    /root/*|/home/*) say "warning: $NODE is under a home directory, which the service cannot read (ProtectHome=yes); install Node system-wide or pass --node" >&2 ;;
  esac
fi
case "$NODE" in
  *[[:space:]\'\"\\%\$\|\&]*) die "--node '$NODE' contains a space, quote, backslash, %, \$, | or &; use a plain path" ;;
esac

[ "$DEPS" != copy ] || [ -d "$SOURCE_DIR/node_modules" ] || die "--deps copy needs $SOURCE_DIR/node_modules: run 'npm ci' in the checkout first"
if [ "$DEPS" != none ]; then command -v npm >/dev/null 2>&1 || die "--deps $DEPS needs npm on PATH (or use --deps none)"; fi

say "installing florence-edge from $SOURCE_DIR into ${ROOT:+$ROOT (staging root) }$PREFIX"

# 1. the package, staged next to the old one and swapped in (a failed npm ci leaves the running install intact)
STAGE="$APP.new"
if [ "$DRY_RUN" = 1 ]; then
  say "would copy: package.json package-lock.json .npmrc README.md dist/src src scripts systemd -> $(dest "$APP")"
  case "$DEPS" in
    npm) say "would run: npm ci --omit=dev --ignore-scripts --no-audit --no-fund (in $(dest "$APP"))" ;;
    copy) say "would copy: $SOURCE_DIR/node_modules -> $(dest "$APP")/node_modules, then npm prune --omit=dev --ignore-scripts" ;;
    none) say "would skip dependencies (--deps none)" ;;
  esac
else
  rm -rf -- "$(dest "$STAGE")"
  mkdir -p "$(dest "$STAGE")/dist" "$(dest "$PREFIX")/bin"
  : >"$(dest "$MARKER")"
  for item in package.json package-lock.json .npmrc README.md LICENSE src scripts systemd; do
    [ -e "$SOURCE_DIR/$item" ] && cp -a "$SOURCE_DIR/$item" "$(dest "$STAGE")/"
  done
  cp -a "$SOURCE_DIR/dist/src" "$(dest "$STAGE")/dist/src"
  rm -rf -- "$(dest "$STAGE")/scripts/python/__pycache__"
  say "copied: the package -> $(dest "$STAGE")"
  case "$DEPS" in
    npm)
      # --ignore-scripts: the root's `prepare` would run tsc (a dev dependency); koffi and sharp ship prebuilt
      # binaries and onnxruntime-node's download is switched off in .npmrc
      (cd "$(dest "$STAGE")" && run npm ci --omit=dev --ignore-scripts --no-audit --no-fund)
      ;;
    copy)
      cp -a "$SOURCE_DIR/node_modules" "$(dest "$STAGE")/node_modules"
      say "copied: $SOURCE_DIR/node_modules"
      (cd "$(dest "$STAGE")" && run npm prune --omit=dev --ignore-scripts --no-audit --no-fund)
      ;;
    none) say "skipped: dependencies (--deps none)" ;;
  esac
  if [ -e "$(dest "$APP")" ]; then
    rm -rf -- "$(dest "$APP").old"
    mv "$(dest "$APP")" "$(dest "$APP").old"
  fi
  mv "$(dest "$STAGE")" "$(dest "$APP")"
  rm -rf -- "$(dest "$APP").old"
  say "installed: $(dest "$APP")"
fi

# 2. the launcher: exec keeps node as the unit's main process (NotifyAccess=main)
write_file "$LAUNCHER" 0755 <<EOF
#!/bin/sh
# florence-edge launcher, written by scripts/install-service.sh
exec $NODE $APP/dist/src/bin.js "\$@"
EOF
if [ "$LINK" = 1 ]; then
  link_target="$(dest "$BIN_LINK")"
  if [ -e "$link_target" ] && ! [ -L "$link_target" ]; then
    say "kept: $link_target is not a link this script made"
  elif [ "$DRY_RUN" = 1 ]; then
    say "would link: $link_target -> $LAUNCHER"
  else
    mkdir -p "$(dirname "$link_target")"
    ln -sfn "$LAUNCHER" "$link_target"
    say "linked: $link_target -> $LAUNCHER"
  fi
fi

# 3. the service user: system user, home = the state directory, in the groups that own GPU and camera devices
write_file "$SYSUSERS_PATH" 0644 <<EOF
# florence-edge service user (scripts/install-service.sh); applied by systemd-sysusers
u $SERVICE_USER - "florence-edge service" /var/lib/$PROGRAM -
m $SERVICE_USER video
m $SERVICE_USER render
EOF
if [ -z "$ROOT" ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    run systemd-sysusers "$SYSUSERS_PATH"
  elif [ "$DRY_RUN" = 1 ]; then
    say "would run: useradd --system --home-dir /var/lib/$PROGRAM --shell /usr/sbin/nologin --user-group $SERVICE_USER; usermod -aG video,render"
  else
    id "$SERVICE_USER" >/dev/null 2>&1 || run useradd --system --home-dir "/var/lib/$PROGRAM" --no-create-home --shell /usr/sbin/nologin --user-group "$SERVICE_USER"
    for group in video render; do
      if getent group "$group" >/dev/null; then run usermod -aG "$group" "$SERVICE_USER"; fi
    done
  fi
else
  say "skipped (--root): creating user $SERVICE_USER (systemd-sysusers applies $SYSUSERS_PATH on the target)"
fi

# 4. the unit, with this install's paths and user
UNIT_TEXT="$(sed \
  -e "s|$DEFAULT_PREFIX|$PREFIX|g" \
  -e "s|^User=.*|User=$SERVICE_USER|" \
  -e "s|^Group=.*|Group=$SERVICE_USER|" \
  "$SOURCE_DIR/systemd/$PROGRAM.service")"
unit_target="$(dest "$UNIT_PATH")"
unit_changed=1
if [ -f "$unit_target" ] && [ "$(cat "$unit_target")" = "$UNIT_TEXT" ]; then unit_changed=0; fi
printf '%s\n' "$UNIT_TEXT" | write_file "$UNIT_PATH" 0644

# 5. config and secrets, only when absent; readable by the service group, not by everyone
write_if_absent "$CONFIG_DIR/config.yaml" 0640 <<'EOF'
# florence-edge service config (README.md "Service"); `systemctl restart florence-edge` after editing.
# Unknown keys are errors, so a typo fails the start with a message naming the key (journalctl -u florence-edge).
model:
  # an onnx-community layout folder, e.g. copied from huggingface.co/onnx-community/Florence-2-base-ft
  path: /var/lib/florence-edge/models/Florence-2-base-ft
  precision: fp16          # fp32 | fp16 | quantized | int8 | uint8 | q4 | q4f16 | bnb4
  backend: auto            # auto | onnxruntime | tensorrt
mqtt:
  # leave url out to run the embedded broker on 127.0.0.1:1883
  url: mqtt://localhost:1883
  topic_prefix: florence-edge
  # username: florence
  # the password goes into /etc/florence-edge/env as FLORENCE_EDGE_MQTT_PASSWORD
cameras:
  - name: camera0
    source:
      type: v4l2
      device: /dev/video0
      format: mjpeg
    tasks:
      - task: "<OD>"
        interval_s: 1
        snapshot: false
stats_interval_s: 10
metrics:
  # Prometheus /metrics on 127.0.0.1; leave port out to disable
  port: 9464
  host: 127.0.0.1
log:
  level: info
EOF
write_if_absent "$CONFIG_DIR/env" 0600 <<'EOF'
# Environment for florence-edge.service, read by systemd (root) at start: secrets stay out of config.yaml.
# KEY=value, one per line.
# FLORENCE_EDGE_MQTT_PASSWORD=
# HF_TOKEN=
# FLORENCE_EDGE_THREADS=4
EOF
# ownership by name, applied by systemd-tmpfiles (at boot too, so a staged --root install gets it on the target)
write_file "$TMPFILES_PATH" 0644 <<EOF
# florence-edge (scripts/install-service.sh): the config is readable by the service's group, not by everyone
d $CONFIG_DIR 0750 root $SERVICE_USER -
z $CONFIG_DIR/config.yaml 0640 root $SERVICE_USER -
z $CONFIG_DIR/env 0600 root root -
EOF
if [ -z "$ROOT" ]; then
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    run systemd-tmpfiles --create "$TMPFILES_PATH"
  elif [ "$DRY_RUN" = 1 ]; then
    say "would run: chgrp $SERVICE_USER $CONFIG_DIR $CONFIG_DIR/config.yaml; chmod 0750 $CONFIG_DIR"
  else
    run chgrp "$SERVICE_USER" "$CONFIG_DIR" "$CONFIG_DIR/config.yaml"
    run chmod 0750 "$CONFIG_DIR"
  fi
else
  say "skipped (--root): on the target run 'systemd-sysusers' then 'systemd-tmpfiles --create $TMPFILES_PATH' (package post-install)"
fi

# 6. systemd
systemctl_live daemon-reload
if [ "$ENABLE" = 1 ]; then
  if [ -n "$ROOT" ]; then
    if [ "$DRY_RUN" = 1 ]; then
      say "would link: $(dest "$WANTS_LINK") -> $UNIT_PATH"
    else
      mkdir -p "$(dirname "$(dest "$WANTS_LINK")")"
      ln -sfn "$UNIT_PATH" "$(dest "$WANTS_LINK")"
      say "enabled: $(dest "$WANTS_LINK") -> $UNIT_PATH"
    fi
  else
    systemctl_live enable "$PROGRAM.service"
  fi
fi
if [ "$START" = 1 ]; then
  systemctl_live restart "$PROGRAM.service"
elif [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && systemctl is-active --quiet "$PROGRAM.service" 2>/dev/null; then
  say "note: $PROGRAM.service is running the previous version; run 'systemctl restart $PROGRAM' (or pass --start)"
fi
[ "$unit_changed" = 0 ] || [ "$DRY_RUN" = 1 ] || say "unit: $unit_target"
if [ "$DRY_RUN" = 1 ]; then
  say "dry run: nothing was changed"
else
  say "done. Edit $CONFIG_DIR/config.yaml, then: systemctl enable --now $PROGRAM; journalctl -u $PROGRAM -f"
fi
