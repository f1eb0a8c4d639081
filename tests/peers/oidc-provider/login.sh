#!/bin/sh
# A `--login-command` for oidc-provider's dev interactions, curl only:
#   lab certify idp ... --login-command 'sh tests/peers/oidc-provider/login.sh'
# Takes the authorization URL as its last argument, signs in as
# $LOCKSTEP_USERNAME with $LOCKSTEP_PASSWORD, gives consent, and prints the
# redirect to $LOCKSTEP_REDIRECT_URI (never fetching it). Errors go to
# stderr with a non-zero exit.
set -eu
for url in "$@"; do :; done
: "${url:?usage: login.sh AUTHORIZATION_URL}"
redirect=${LOCKSTEP_REDIRECT_URI:?LOCKSTEP_REDIRECT_URI is not set}
user=${LOCKSTEP_USERNAME:-alice}
password=${LOCKSTEP_PASSWORD:-x}
jar=$(mktemp)
body=$(mktemp)
trap 'rm -f "$jar" "$body"' EXIT
origin=$(printf '%s\n' "$url" | sed -E 's#^(https?://[^/]+).*#\1#')
step=get
hops=0
while [ "$hops" -lt 20 ]; do
  hops=$((hops + 1))
  case $step in
  get) out=$(curl -sS -b "$jar" -c "$jar" -o "$body" -w '%{http_code} %{redirect_url}' "$url") ;;
  login) out=$(curl -sS -b "$jar" -c "$jar" -o "$body" -w '%{http_code} %{redirect_url}' \
    --data prompt=login --data-urlencode "login=$user" --data-urlencode "password=$password" "$url") ;;
  consent) out=$(curl -sS -b "$jar" -c "$jar" -o "$body" -w '%{http_code} %{redirect_url}' \
    --data prompt=consent "$url") ;;
  esac
  status=${out%% *}
  next=${out#* }
  case $status in
  301 | 302 | 303 | 307 | 308)
    case $next in
    "$redirect" | "$redirect"\?* | "$redirect"\#*)
      printf '%s\n' "$next"
      exit 0
      ;;
    esac
    url=$next
    step=get
    continue
    ;;
  200) ;;
  *)
    echo "login.sh: $url answered $status: $(head -c 300 "$body")" >&2
    exit 1
    ;;
  esac
  action=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$body" | head -n 1)
  if [ -z "$action" ]; then
    echo "login.sh: no form on $url: $(head -c 300 "$body")" >&2
    exit 1
  fi
  case $action in /*) action=$origin$action ;; esac
  if grep -q 'name="login"' "$body"; then
    step=login
  elif grep -q 'name="prompt" value="consent"' "$body"; then
    step=consent
  else
    echo "login.sh: neither a login nor a consent form on $url" >&2
    exit 1
  fi
  url=$action
done
echo "login.sh: no redirect to $redirect after $hops requests" >&2
exit 1
