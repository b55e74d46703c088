// SPDX-License-Identifier: MIT
/* Unit tests: what /proc says of a caller's thread (the commit point's writer identity). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caller.h"
#include "tap.h"

struct thread_seen {
	pid_t tid;
	int rc;
	struct caller_info ci;
};

static void *thread_main(void *arg)
{
	struct thread_seen *ts = arg;

	ts->tid = gettid();
	ts->rc = caller_get(ts->tid, true, &ts->ci);
	return NULL;
}

int main(void)
{
	struct caller_info ci;
	struct thread_seen ts = {0};
	pid_t child;
	pthread_t t;
	int status;

	is_int(caller_get(getpid(), true, &ci), 0, "own process");
	is_int(ci.tgid, getpid(), "tgid of the main thread is the pid");
	ok(!ci.exiting && ci.signal == 0, "a running process is not exiting");

	/* A thread's id maps to its process: writes and close() may come from any thread. */
	pthread_create(&t, NULL, thread_main, &ts);
	pthread_join(t, NULL);
	ok(ts.tid > 0 && ts.tid != getpid(), "the thread has its own id");
	is_int(ts.rc, 0, "a live thread");
	is_int(ts.ci.tgid, getpid(), "tgid of a thread is its process");

	is_int(caller_get(0, false, &ci), -ENOENT, "tid 0 (another pid namespace) is unknown");

	/* A child stopped by a signal: alive, not exiting; after reaping, gone. */
	child = fork();
	if (!child) {
		pause();
		_exit(0);
	}
	is_int(caller_get(child, true, &ci), 0, "a child");
	is_int(ci.tgid, child, "the child's tgid is its pid");
	ok(!ci.exiting, "a paused child is not exiting");
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	is_int(caller_get(child, true, &ci), -ENOENT, "a reaped child is gone");
	return tap_done();
}
