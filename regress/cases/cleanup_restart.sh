# cleanup killed with SIGKILL under load, twice, while qmgr delivers
# through a relay (Postfix's smtp-sink): every message that got a 250
# arrives, and none twice beyond the one in flight at each kill. Before
# the journal's progress note, the restarted cleanup wrote again every
# message of its unretired segments that it did not find queued, most of
# them delivered meanwhile: a second or so of mail delivered twice.
. ./lib.sh
. ./peers.sh
write_conf "relay { host = \"[127.0.0.1]:$RELAY\"; }" "queue { backoff { min = 1s; max = 2s; } }"
start_master
smtp_sink
load_start
kill_role_twice cleanup
load_check "$KILLS"
grep -q "journal recovery: .* [1-9][0-9]* gone since they were written" "$LOG" ||
	fail "no recovery found messages delivered since they were written out"
exit 0
