/*
 * confchg_watch.c - failure-detection time of Corosync's CPG, the counterpart of
 * `totemcast bench --role watch`.
 *
 * Connects to the local corosync (model V1, initial totem confchg), joins a group, waits for a
 * totem configuration of NODES nodes, then kill -9's PID (a corosync of the cluster) and waits
 * for the next, smaller totem configuration delivered to this client. Prints
 *   RESULT role=watch_ready nodes=N
 *   RESULT role=failover nodes_before=N nodes_after=M detect_ms=T
 * with T from just before kill() to the totem confchg callback (CLOCK_MONOTONIC).
 *
 * usage: confchg_watch -k PID [-n NODES] [-g GROUP] [-T TIMEOUT_S]
 * Build: gcc -O2 -Wall -o confchg_watch confchg_watch.c -lcpg
 */
#define _GNU_SOURCE
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static cpg_handle_t H;
static int FD;
static size_t totem_nodes; /* 0 until the first totem confchg */
static uint64_t totem_ns;
static int totem_seen;

static void on_deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		       uint32_t pid, void *msg, size_t len)
{
	(void)h; (void)g; (void)nodeid; (void)pid; (void)msg; (void)len;
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *g,
		       const struct cpg_address *m, size_t n,
		       const struct cpg_address *l, size_t nl,
		       const struct cpg_address *j, size_t nj)
{
	(void)h; (void)g; (void)m; (void)n; (void)l; (void)nl; (void)j; (void)nj;
}

static void on_totem(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n,
		     const uint32_t *members)
{
	(void)h; (void)ring; (void)members;
	totem_nodes = n;
	totem_ns = now_ns();
	totem_seen = 1;
}

static void pump(int timeout_ms)
{
	struct pollfd p = { .fd = FD, .events = POLLIN };
	cs_error_t e;
	if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR) {
		perror("poll");
		exit(2);
	}
	e = cpg_dispatch(H, CS_DISPATCH_ALL);
	if (e != CS_OK && e != CS_ERR_TRY_AGAIN) {
		fprintf(stderr, "confchg_watch: cpg_dispatch: cs_error %d\n", (int)e);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	static cpg_model_v1_data_t model;
	const char *group = "bench-watch";
	struct cpg_name g;
	size_t nodes = 3;
	pid_t victim = 0;
	int timeout = 120, c;
	cs_error_t e;

	while ((c = getopt(argc, argv, "k:n:g:T:")) != -1) {
		switch (c) {
		case 'k': victim = (pid_t)atoi(optarg); break;
		case 'n': nodes = strtoull(optarg, NULL, 0); break;
		case 'g': group = optarg; break;
		case 'T': timeout = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: confchg_watch -k PID [-n NODES] [-g GROUP] [-T S]\n");
			return 1;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm((unsigned)timeout);
	memset(&model, 0, sizeof(model));
	model.model = CPG_MODEL_V1;
	model.cpg_deliver_fn = on_deliver;
	model.cpg_confchg_fn = on_confchg;
	model.cpg_totem_confchg_fn = on_totem;
	model.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
	e = cpg_model_initialize(&H, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL);
	if (e != CS_OK) {
		fprintf(stderr, "confchg_watch: cpg_model_initialize: cs_error %d\n", (int)e);
		return 2;
	}
	cpg_fd_get(H, &FD);
	memset(&g, 0, sizeof(g));
	g.length = (uint32_t)strlen(group);
	memcpy(g.value, group, g.length);
	while ((e = cpg_join(H, &g)) == CS_ERR_TRY_AGAIN)
		usleep(10000);
	if (e != CS_OK) {
		fprintf(stderr, "confchg_watch: cpg_join: cs_error %d\n", (int)e);
		return 2;
	}
	while (totem_nodes < nodes)
		pump(-1);
	printf("RESULT role=watch_ready nodes=%zu\n", nodes);
	if (victim > 0) {
		uint64_t t0 = now_ns();
		if (kill(victim, SIGKILL) != 0) {
			perror("kill");
			return 2;
		}
		totem_seen = 0;
		while (!totem_seen || totem_nodes >= nodes)
			pump(-1);
		printf("RESULT role=failover nodes_before=%zu nodes_after=%zu detect_ms=%.1f\n",
		       nodes, totem_nodes, (totem_ns - t0) / 1e6);
	}
	cpg_finalize(H);
	return 0;
}
