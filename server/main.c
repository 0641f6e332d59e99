/* velad: the vela server. Usage: velad [config-file] [--name value ...]
 * e.g. velad --port 6380 --dir ./data --requirepass secret */
#include <stdio.h>

#include "server/server.h"
#include "common/common.h"

int main(int argc, char **argv)
{
	srv_config_t cfg;
	vela_err_t err = {0};
	srv_config_init(&cfg);
	if (srv_config_from_args(&cfg, argc, argv, &err)) {
		fprintf(stderr, "velad: %s\n", err.msg);
		srv_config_free(&cfg);
		return 2;
	}
	vela_log_set_level(cfg.log_level);
	/* Before the database opens: `gpu yes` without a device is a start-up error. */
	if (vela_gpu_mode_set(cfg.gpu_mode, &err)) {
		fprintf(stderr, "velad: gpu %s: %s\n", vela_gpu_mode_name(cfg.gpu_mode), err.msg);
		srv_config_free(&cfg);
		return 1;
	}
	srv_t *s = NULL;
	/* srv_create takes ownership of cfg's strings. */
	if (srv_create(&cfg, &s, &err)) {
		fprintf(stderr, "velad: %s\n", err.msg);
		srv_destroy(s);
		return 1;
	}
	srv_run(s);
	srv_destroy(s);
	return 0;
}
