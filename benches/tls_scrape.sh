#!/bin/sh
# Scrapes over TLS (and with basic auth) against nginx serving the same bytes over TLS, in the
# same run: the release binary's `demo` with KEYS keys three times (plain, a web config with
# TLS, TLS plus a bcrypt user), nginx (Debian) with the same certificate serving a copy of the
# gzip body with gzip_static, and hey making a new connection per scrape (so every https
# scrape pays a full handshake), gzip as Prometheus asks, 1 and 8 at a time.
#
#   cargo build --release && sh benches/tls_scrape.sh [KEYS]
#
# Needs openssl, htpasswd (apache2-utils), nginx and hey. hey 0.1.4's -a flag sends no
# Authorization header, and it sends "host:port" as the TLS server name, which rustls refuses
# as not a DNS name (Go's own servers accept it): the script passes the header itself and
# -host localhost. Every process it starts is stopped by its pid.
set -eu

KEYS=${1:-10000}
BINARY=${BINARY:-target/release/cometapi-keymon}
WORK=$(mktemp -d)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
HASH=$(htpasswd -nbBC 10 "" benchpass | tr -d ':\n')
printf 'tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n' > "$WORK/tls.yml"
printf 'tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: %s\n' \
    "$HASH" > "$WORK/auth.yml"
AUTH="Authorization: Basic $(printf prometheus:benchpass | base64)"

"$BINARY" demo --listen 127.0.0.1:19001 --keys "$KEYS" > "$WORK/plain.log" 2>&1 &
PIDS="$PIDS $!"
"$BINARY" demo --listen 127.0.0.1:19002 --keys "$KEYS" --web.config.file "$WORK/tls.yml" > "$WORK/tls.log" 2>&1 &
PIDS="$PIDS $!"
"$BINARY" demo --listen 127.0.0.1:19003 --keys "$KEYS" --web.config.file "$WORK/auth.yml" > "$WORK/auth.log" 2>&1 &
PIDS="$PIDS $!"
sleep 8

mkdir -p "$WORK/www" "$WORK/logs"
curl -sf -H 'Accept-Encoding: gzip' http://127.0.0.1:19001/metrics > "$WORK/www/metrics.gz"
gunzip -c "$WORK/www/metrics.gz" > "$WORK/www/metrics"
# nginx's workers run as an unprivileged user: let them read the bytes.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/metrics" "$WORK/www/metrics.gz"
cat > "$WORK/nginx.conf" <<EOF
worker_processes 2;
error_log $WORK/logs/error.log;
pid $WORK/logs/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/logs;
  proxy_temp_path $WORK/logs;
  fastcgi_temp_path $WORK/logs;
  uwsgi_temp_path $WORK/logs;
  scgi_temp_path $WORK/logs;
  server {
    listen 127.0.0.1:19010;
    listen 127.0.0.1:19011 ssl;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    root $WORK/www;
    location / { gzip_static on; default_type text/plain; }
  }
}
EOF
nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2> "$WORK/logs/stderr" &
PIDS="$PIDS $!"
sleep 1
# The authenticated daemon's first check is a real bcrypt comparison; later ones are cached.
curl -skf -o /dev/null -H "$AUTH" https://127.0.0.1:19003/metrics

bench() {
    url=$1; concurrency=$2; requests=$3; shift 3
    hey -n "$requests" -c "$concurrency" -disable-keepalive -host localhost \
        -H "Accept-Encoding: gzip" "$@" "$url" |
        awk '/Requests\/sec/{r=$2} /50% in/{m=$3} /99% in/{p=$3} /\[200\]/{ok=$2}
             END{printf "%7.0f req/s  median %6.2f ms  p99 %6.2f ms  (%s x 200)\n", r, m*1000, p*1000, ok + 0}'
}

echo "$KEYS keys, $(wc -c < "$WORK/www/metrics.gz") bytes gzip; a new connection per scrape"
for concurrency in 1 8; do
    requests=$((concurrency == 1 ? 500 : 2000))
    echo "-- $concurrency at a time"
    printf "keymon http         "; bench http://127.0.0.1:19001/metrics $concurrency $requests
    printf "nginx  http         "; bench http://127.0.0.1:19010/metrics $concurrency $requests
    printf "keymon https        "; bench https://127.0.0.1:19002/metrics $concurrency $requests
    printf "keymon https + auth "; bench https://127.0.0.1:19003/metrics $concurrency $requests -H "$AUTH"
    printf "nginx  https        "; bench https://127.0.0.1:19011/metrics $concurrency $requests
done
