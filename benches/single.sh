# One server at a time, for the compare scripts that run cairn and etcd in turn (sourced,
# not run):
#   single_server_work PREFIX  makes the work folder $WORK (mktemp under /tmp) and traps
#                    EXIT to kill the running server ($SERVER_PID, "" when none) and
#                    remove $WORK; INT and TERM exit through that trap;
#   port_in_use PORT succeeds when something accepts connections on 127.0.0.1:PORT.

single_server_work() {
    WORK=$(mktemp -d -p /tmp "$1.XXXXXX")
    SERVER_PID=""
    trap single_server_cleanup EXIT
    trap 'exit 130' INT TERM
}

single_server_cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
