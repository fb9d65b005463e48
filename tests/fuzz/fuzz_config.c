/*
 * fuzz_config.c: libFuzzer harness for config.json (src/model/config.c, over src/io/json.c).
 *
 * The input is written as config.json in a scratch folder and loaded with model_config_load.
 * An accepted config must keep the promises the model code builds on (what src/model/ indexes
 * with): every size positive, Hkv divides H, rot_dim even and within the head, inv_freq finite
 * and >= 0, window per layer non-negative; a broken promise aborts (libFuzzer: crash).
 */
#include "fuzz_common.h"
#include "model/config.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_write("config.json", data, size);
    model_config cfg;
    ft_error err;
    if (model_config_load(fz_dir(), &cfg, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    if (!cfg.arch || cfg.C < 1 || cfg.I < 1 || cfg.L < 1 || cfg.H < 1 || cfg.Hkv < 1 ||
        cfg.D < 1 || cfg.V < 1 || cfg.H % cfg.Hkv || cfg.rot_dim < 2 || cfg.rot_dim % 2 ||
        cfg.rot_dim > cfg.D || !cfg.window || !cfg.inv_freq || !(cfg.eps >= 0) ||
        !isfinite(cfg.attn_scaling))
        abort();
    for (int i = 0; i < cfg.rot_dim / 2; i++)
        /* >= 0: a huge linear scaling factor underflows to 0 in fp32, as in transformers */
        if (!isfinite(cfg.inv_freq[i]) || !(cfg.inv_freq[i] >= 0)) abort();
    for (int l = 0; l < cfg.L; l++)
        if (cfg.window[l] < 0) abort();
    char name[256];
    for (int k = 0; k < LIN_COUNT; k++) weight_name(name, sizeof name, cfg.L - 1, k, "weight");
    model_config_free(&cfg);
    return 0;
}
