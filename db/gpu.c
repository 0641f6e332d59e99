/* The engine API's GPU knobs (vela.h "GPU"): the process-wide backend
 * selection of index/ (index.h BACKEND), re-exported for the server and
 * embedders. */
#include "db.h"

int vela_gpu_mode_set(vela_gpu_mode_t mode, vela_err_t *err)
{
	return index_backend_mode_set(mode, err);
}

vela_gpu_mode_t vela_gpu_mode_get(void)
{
	return index_backend_mode_get();
}

int vela_gpu_mode_parse(const char *s, vela_gpu_mode_t *out)
{
	return out ? index_backend_mode_parse(s, out) : VELA_EINVAL;
}

const char *vela_gpu_mode_name(vela_gpu_mode_t mode)
{
	return index_backend_mode_name(mode);
}

void vela_gpu_info(vela_gpu_info_t *out)
{
	index_backend_info(out);
}
