# The options every scripts/k8s script takes (sourced before it reads its own):
# --store NAME, --keep, --results FILE, -h/--help (its header comment).
store=cairn
keep=0
results=""

# common_arg ARGS...: takes the first argument (and its value) if it is one of these,
# setting $taken to how many it took; exits with a usage error on any other.
common_arg() {
    case "$1" in
        --store) store="$2"; taken=2 ;;
        --keep) keep=1; taken=1 ;;
        --results) results="$2"; taken=2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "$(basename "$0"): unknown argument $1" >&2; exit 2 ;;
    esac
}
