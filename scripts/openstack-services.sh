#!/usr/bin/env bash
# Prepares a throw-away Keystone and Glance in DIR for the tests (the Debian
# packages keystone and glance; scripts/install-deps.sh test installs them).
#
#   scripts/openstack-services.sh setup DIR KEYSTONE_PORT GLANCE_PORT
#
# reads the admin password on the environment (OS_TEST_ADMIN_PASSWORD, never
# an argument: arguments show in ps), writes DIR/keystone.conf and
# DIR/glance-api.conf (SQLite databases, Fernet and credential keys and
# Glance's file store, all in DIR), creates the databases and bootstraps
# Keystone (admin user, project and role, the identity endpoint on
# http://127.0.0.1:KEYSTONE_PORT/v3, region RegionOne). It starts nothing: the
# caller (internal/servicetest's StartOpenStack) runs the two servers as its own
# children, with the commands DIR/keystone.cmd and DIR/glance.cmd name:
#
#   /usr/bin/python3 /usr/bin/keystone-wsgi-public --host 127.0.0.1 --port KEYSTONE_PORT -- --config-file DIR/keystone.conf
#   /usr/bin/python3 /usr/bin/glance-api --config-file DIR/glance-api.conf
#
# Debian's /usr/bin/python3, not the python3 on PATH, which may be another
# interpreter without these modules. No system service is touched.
set -euo pipefail

if [ $# -ne 4 ] || [ "$1" != setup ]; then
  echo "usage: $0 setup DIR KEYSTONE_PORT GLANCE_PORT (admin password in OS_TEST_ADMIN_PASSWORD)" >&2
  exit 2
fi
dir=$(realpath "$2")
kport=$3
gport=$4
: "${OS_TEST_ADMIN_PASSWORD:?the admin password goes in OS_TEST_ADMIN_PASSWORD}"
py=/usr/bin/python3
for f in /usr/bin/keystone-manage /usr/bin/keystone-wsgi-public /usr/bin/glance-manage /usr/bin/glance-api; do
  if [ ! -x "$f" ]; then
    echo "$f is missing: install the Debian packages keystone and glance (scripts/install-deps.sh test)" >&2
    exit 3
  fi
done
paste=/usr/share/glance-common/glance-api-paste.ini
[ -f "$paste" ] || paste=/etc/glance/glance-api-paste.ini

mkdir -p "$dir"/{fernet-keys,credential-keys,images,staging,tasks,lock,log}
keystone_url=http://127.0.0.1:$kport

cat >"$dir/keystone.conf" <<EOF
[DEFAULT]
log_file = $dir/log/keystone.log
use_stderr = false
[database]
connection = sqlite:///$dir/keystone.db
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $dir/fernet-keys
[fernet_receipts]
key_repository = $dir/fernet-keys
[credential]
key_repository = $dir/credential-keys
[identity]
# bcrypt's smallest cost: password checks in milliseconds, not a second.
password_hash_rounds = 4
[cache]
enabled = false
[oslo_concurrency]
lock_path = $dir/lock
EOF

cat >"$dir/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $gport
workers = 0
log_file = $dir/log/glance-api.log
use_stderr = false
node_staging_uri = file://$dir/staging
image_cache_dir = $dir/cache
[database]
connection = sqlite:///$dir/glance.db
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $dir/images/
[os_glance_tasks_store]
filesystem_store_datadir = $dir/tasks/
[os_glance_staging_store]
filesystem_store_datadir = $dir/staging/
[keystone_authtoken]
www_authenticate_uri = $keystone_url
auth_url = $keystone_url
auth_type = password
user_domain_id = default
project_domain_id = default
project_name = admin
username = admin
password = $OS_TEST_ADMIN_PASSWORD
service_token_roles_required = true
# Glance needs no catalog: Keystone answers the token checks faster without.
include_service_catalog = false
[paste_deploy]
flavor = keystone
config_file = $paste
[oslo_concurrency]
lock_path = $dir/lock
[oslo_policy]
enforce_new_defaults = false
EOF
chmod 600 "$dir/keystone.conf" "$dir/glance-api.conf"

km() { "$py" /usr/bin/keystone-manage --config-file "$dir/keystone.conf" "$@"; }
km db_sync
# WAL: otherwise concurrent writes (creating a service) fail with "database is locked".
"$py" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL").fetchall()' "$dir/keystone.db"
km fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
km credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
# Keystone warns on every token when its key repositories are world readable.
chmod 700 "$dir/fernet-keys" "$dir/credential-keys"
km bootstrap --bootstrap-password "$OS_TEST_ADMIN_PASSWORD" \
  --bootstrap-admin-url "$keystone_url/v3/" --bootstrap-internal-url "$keystone_url/v3/" \
  --bootstrap-public-url "$keystone_url/v3/" --bootstrap-region-id RegionOne
"$py" /usr/bin/glance-manage --config-file "$dir/glance-api.conf" db_sync >"$dir/log/glance-manage.out" 2>&1 ||
  { cat "$dir/log/glance-manage.out" >&2; exit 1; }
