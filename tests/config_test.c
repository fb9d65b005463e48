/*
 * config_test.c: config.json -> model_config.
 *
 * - Errors: a missing config.json, malformed JSON (line:column), each required field missing and
 *   of the wrong type, an unknown architecture (hint lists the supported ones), an unsupported
 *   rope type in both formats, a non-silu activation, inconsistent head counts: all FT_ERR_INPUT
 *   naming config.json and the field.
 * - RoPE: the transformers-5 format (rope_parameters) and the legacy format (rope_theta +
 *   rope_scaling with "type") give bit-identical inv_freq; default and linear inv_freq against
 *   1 / theta^(2i/D) (/ factor) computed in double (relative tolerance 2.5e-7: three fp32
 *   roundings of about 6e-8 each); llama3 against the published llama3 formula evaluated in
 *   double (relative tolerance 1e-6, since the fp32 smoothing step adds a few more roundings).
 * - Defaults of the transformers 5.23 configuration classes when a field is absent, and the
 *   absent/null distinction (Mistral sliding_window: absent 4096, null none; Qwen3 head_dim
 *   absent 128), per-layer windows for Qwen2 (max_window_layers and layer_types), biases.
 *   The peer test tests/peers/test_safetensors_config.py checks the same against transformers.
 * - weight_name() spells the Hugging Face tensor names.
 */
#include "model/config.h"
#include "test.h"

#include <string.h>
#include <unistd.h>

static char dir[256];

static void write_config(const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

#define SIZES                                                                                      \
    "\"hidden_size\": 64, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, "                  \
    "\"intermediate_size\": 96, \"vocab_size\": 128"
#define BASE "\"architectures\": [\"LlamaForCausalLM\"], " SIZES
#define QWEN2 "\"architectures\": [\"Qwen2ForCausalLM\"], " SIZES
#define PHI3 "\"architectures\": [\"Phi3ForCausalLM\"], " SIZES

static ft_status load_text(const char *text, model_config *c, ft_error *err) {
    write_config(text);
    memset(err, 0, sizeof *err);
    return model_config_load(dir, c, err);
}

/* The config must fail with FT_ERR_INPUT; where names config.json and `field`. */
static void expect_bad(const char *text, const char *field, const char *label) {
    model_config c;
    ft_error err;
    int st = load_text(text, &c, &err);
    CHECK(st == FT_ERR_INPUT, "%s: status %d", label, st);
    char all[2200];
    snprintf(all, sizeof all, "%s | %s | %s", err.where, err.what, err.hint);
    CHECK(strstr(err.where, "config.json") != NULL, "%s: names config.json: %s", label, all);
    CHECK(strstr(all, field) != NULL, "%s: names '%s': %s", label, field, all);
    if (st == FT_OK) model_config_free(&c);
}

static void test_errors(void) {
    model_config c;
    ft_error err;
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    CHECK(model_config_load(dir, &c, &err) == FT_ERR_INPUT && strstr(err.where, "config.json"),
          "missing config.json: %s", err.where);
    expect_bad("{\n \"hidden_size\": 64,\n \"x\": [1,,2]}", "config.json:3:", "malformed JSON");
    const char *req[] = {"hidden_size", "num_hidden_layers", "num_attention_heads",
                         "intermediate_size", "vocab_size"};
    for (int i = 0; i < 5; i++) {
        char text[1024], label[128];
        /* missing */
        snprintf(text, sizeof text, "{\"architectures\": [\"LlamaForCausalLM\"]");
        for (int k = 0; k < 5; k++)
            if (k != i)
                snprintf(text + strlen(text), sizeof text - strlen(text), ", \"%s\": %d", req[k],
                         k == 0 ? 64 : 4);
        strcat(text, "}");
        snprintf(label, sizeof label, "missing %s", req[i]);
        expect_bad(text, req[i], label);
        /* wrong type */
        snprintf(text, sizeof text, "{\"architectures\": [\"LlamaForCausalLM\"]");
        for (int k = 0; k < 5; k++)
            snprintf(text + strlen(text), sizeof text - strlen(text),
                     k == i ? ", \"%s\": \"%d\"" : ", \"%s\": %d", req[k], k == 0 ? 64 : 4);
        strcat(text, "}");
        snprintf(label, sizeof label, "%s as a string", req[i]);
        expect_bad(text, req[i], label);
    }
    expect_bad("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64.5, "
               "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"intermediate_size\": 96, "
               "\"vocab_size\": 128}",
               "hidden_size", "fractional size");
    expect_bad("{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}", "architectures",
               "unknown architecture");
    load_text("{\"architectures\": [\"GPT2LMHeadModel\"]}", &c, &err);
    CHECK(strstr(err.hint, "Qwen3ForCausalLM") && strstr(err.hint, "Phi3ForCausalLM"),
          "hint lists the supported architectures: %s", err.hint);
    load_text("{\"architectures\": [\"LlamaForSequenceClassification\"], \"model_type\": "
              "\"llama\"}",
              &c, &err);
    CHECK(err.status == FT_ERR_INPUT && strstr(err.hint, "\"LlamaForCausalLM\""),
          "another head on a known backbone: hint names the causal LM class: %s", err.hint);
    expect_bad("{\"model_type\": \"gpt2\", \"hidden_size\": 64}", "model_type",
               "unknown model_type");
    expect_bad("{\"architectures\": \"LlamaForCausalLM\"}", "architectures",
               "architectures not a list");
    expect_bad("{" BASE ", \"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2}}",
               "rope_parameters.rope_type", "dynamic rope");
    expect_bad("{" BASE ", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}",
               "rope_scaling.type", "legacy yarn rope");
    load_text("{" BASE ", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}", &c, &err);
    CHECK(strstr(err.hint, "linear") && strstr(err.hint, "llama3"), "hint names supported types");
    expect_bad("{" BASE ", \"rope_parameters\": {\"rope_type\": \"linear\"}}",
               "rope_parameters.factor", "linear without factor");
    expect_bad("{" BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
               "low_freq_factor", "llama3 without low_freq_factor");
    expect_bad("{" BASE ", \"rope_theta\": \"big\"}", "rope_theta", "rope_theta a string");
    expect_bad("{" BASE ", \"rope_scaling\": 3}", "rope_scaling", "rope_scaling a number");
    expect_bad("{" BASE ", \"hidden_act\": \"gelu\"}", "hidden_act", "gelu");
    expect_bad("{" BASE ", \"num_key_value_heads\": 3}", "num_key_value_heads", "H % Hkv");
    expect_bad("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
               "\"num_hidden_layers\": 3, \"num_attention_heads\": 5, \"intermediate_size\": 96, "
               "\"vocab_size\": 128}",
               "num_attention_heads", "C % H");
    expect_bad("{" BASE ", \"tie_word_embeddings\": 1}", "tie_word_embeddings", "tie not bool");
    expect_bad("{" BASE ", \"eos_token_id\": \"</s>\"}", "eos_token_id", "eos a string");
    expect_bad("{" QWEN2 ", \"num_key_value_heads\": 2,"
               " \"use_sliding_window\": true, \"layer_types\": [\"full_attention\"]}",
               "layer_types", "layer_types of the wrong length");
    expect_bad("{" PHI3 ", \"rope_parameters\": "
               "{\"rope_type\": \"linear\", \"factor\": 2}}",
               "rope_type", "linear rope on Phi3 (transformers allows default/longrope only)");
    expect_bad("[1, 2]", "config.json", "not an object");
}

static void test_rope(void) {
    model_config a, b;
    ft_error err;
    /* default rope: theta 500000, D = 16 */
    CHECK(load_text("{" BASE ", \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": "
                    "500000.0}}",
                    &a, &err) == FT_OK,
          "default: %s %s", err.where, err.what);
    CHECK(a.rot_dim == 16 && a.attn_scaling == 1.0f, "rot_dim %d", a.rot_dim);
    for (int i = 0; i < 8; i++) {
        double ref = 1.0 / pow(500000.0, 2.0 * i / 16.0);
        CHECK_NEAR(a.inv_freq[i] / ref, 1.0, 2.5e-7, "default inv_freq vs double");
    }
    model_config_free(&a);
    /* no rope fields at all: theta 10000 */
    CHECK(load_text("{" BASE "}", &a, &err) == FT_OK, "no rope fields");
    CHECK_NEAR(a.inv_freq[1], 1.0 / pow(10000.0, 2.0 / 16.0), 1e-7, "theta defaults to 10000");
    model_config_free(&a);

    /* linear: both formats, identical; and vs double */
    CHECK(load_text("{" BASE ", \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 4.0,"
                    " \"rope_theta\": 250000}}",
                    &a, &err) == FT_OK,
          "linear new: %s %s", err.where, err.what);
    CHECK(load_text("{" BASE ", \"rope_theta\": 250000, \"rope_scaling\": {\"type\": \"linear\", "
                    "\"factor\": 4.0}}",
                    &b, &err) == FT_OK,
          "linear legacy: %s %s", err.where, err.what);
    CHECK(!memcmp(a.inv_freq, b.inv_freq, 8 * sizeof(float)), "linear: formats agree bitwise");
    for (int i = 0; i < 8; i++) {
        double ref = 1.0 / pow(250000.0, 2.0 * i / 16.0) / 4.0;
        CHECK_NEAR(a.inv_freq[i] / ref, 1.0, 2.5e-7, "linear inv_freq vs double");
    }
    model_config_free(&a);
    model_config_free(&b);

    /* llama3: new vs legacy ("rope_type" inside rope_scaling) and vs the formula in double */
    const char *r3 = "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                     "\"original_max_position_embeddings\": 256";
    char t1[1024], t2[1024];
    snprintf(t1, sizeof t1,
             "{" BASE ", \"head_dim\": 64, \"rope_parameters\": {\"rope_type\": \"llama3\", "
             "\"rope_theta\": 500000, %s}}",
             r3);
    snprintf(t2, sizeof t2,
             "{" BASE ", \"head_dim\": 64, \"rope_theta\": 500000, \"rope_scaling\": "
             "{\"rope_type\": \"llama3\", %s}}",
             r3);
    CHECK(load_text(t1, &a, &err) == FT_OK, "llama3 new: %s %s", err.where, err.what);
    CHECK(load_text(t2, &b, &err) == FT_OK, "llama3 legacy: %s %s", err.where, err.what);
    CHECK(a.rot_dim == 64 && !memcmp(a.inv_freq, b.inv_freq, 32 * sizeof(float)),
          "llama3: formats agree bitwise");
    int low = 0, mid = 0, high = 0;
    for (int i = 0; i < 32; i++) {
        double f = 1.0 / pow(500000.0, 2.0 * i / 64.0), wl = 2 * M_PI / f, ref;
        if (wl < 256.0 / 4.0) {
            ref = f, high++;
        } else if (wl > 256.0 / 1.0) {
            ref = f / 8.0, low++;
        } else {
            double s = (256.0 / wl - 1.0) / (4.0 - 1.0);
            ref = (1 - s) * f / 8.0 + s * f, mid++;
        }
        CHECK_NEAR(a.inv_freq[i] / ref, 1.0, 1e-6, "llama3 inv_freq vs double formula");
    }
    CHECK(low > 0 && mid > 0 && high > 0, "llama3 case covers all three bands (%d %d %d)", low, mid,
          high);
    model_config_free(&a);
    model_config_free(&b);

    /* Phi3 partial rotation */
    CHECK(load_text("{" PHI3 ", \"rope_parameters\": "
                    "{\"rope_type\": \"default\", \"rope_theta\": 10000, "
                    "\"partial_rotary_factor\": 0.5}}",
                    &a, &err) == FT_OK,
          "phi3 partial: %s", err.what);
    CHECK(a.rot_dim == 8 && a.arch->fused_qkv && a.arch->fused_gate_up, "phi3 rot_dim %d",
          a.rot_dim);
    CHECK_NEAR(a.inv_freq[1], 1.0 / pow(10000.0, 2.0 / 8.0), 1e-7, "phi3 partial inv_freq");
    CHECK_NEAR(a.eps, 1e-5, 1e-12, "Phi3Config rms_norm_eps default 1e-5");
    model_config_free(&a);
    expect_bad("{" BASE ", \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2, "
               "\"partial_rotary_factor\": 0.5}}",
               "partial_rotary_factor", "partial rotation on Llama");
}

static void test_defaults_and_windows(void) {
    model_config c;
    ft_error err;
    /* Llama: Hkv = H, D = C/H, eps 1e-6, no bias, untied, bos 1 eos 2 */
    CHECK(load_text("{" BASE ", \"eos_token_id\": [7, 8], \"torch_dtype\": \"bfloat16\"}", &c,
                    &err) == FT_OK,
          "llama");
    CHECK(c.Hkv == 4 && c.D == 16 && c.C == 64 && c.I == 96 && c.L == 3 && c.V == 128,
          "llama sizes");
    CHECK(!c.attn_bias && !c.o_bias && !c.mlp_bias && !c.tie_embeddings, "llama no bias");
    CHECK(c.bos_token_id == 1 && c.eos_token_id == 7, "bos %ld eos %ld (first of a list)",
          c.bos_token_id, c.eos_token_id);
    CHECK(!strcmp(c.torch_dtype, "bfloat16"), "torch_dtype %s", c.torch_dtype);
    CHECK(c.window[0] == 0 && c.window[2] == 0 && c.max_pos == 2048, "llama: no windows");
    model_config_free(&c);
    CHECK(load_text("{" BASE ", \"attention_bias\": true, \"mlp_bias\": true, \"dtype\": "
                    "\"float16\", \"tie_word_embeddings\": true}",
                    &c, &err) == FT_OK,
          "llama bias");
    CHECK(c.attn_bias && c.o_bias && c.mlp_bias && c.tie_embeddings, "llama biases on");
    CHECK(!strcmp(c.torch_dtype, "float16"), "dtype (transformers 5 name)");
    model_config_free(&c);
    /* model_type alone picks the row */
    CHECK(load_text("{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                    "\"intermediate_size\": 96, \"vocab_size\": 128}",
                    &c, &err) == FT_OK,
          "qwen2 by model_type: %s", err.what);
    CHECK(c.arch->qkv_bias && c.attn_bias && !c.o_bias, "Qwen2: q,k,v biases, none on o");
    CHECK(c.bos_token_id == -1 && c.eos_token_id == -1, "Qwen2: no bos/eos by default");
    CHECK(c.window[0] == 0 && c.window[1] == 0, "Qwen2: use_sliding_window defaults to false");
    model_config_free(&c);
    /* Mistral: absent sliding_window is the class default 4096 on every layer; null is none;
     * absent num_key_value_heads is the class default 8, null is H */
    const char *mis = "\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64, "
                      "\"num_hidden_layers\": 2, \"num_attention_heads\": 16, "
                      "\"intermediate_size\": 96, \"vocab_size\": 128";
    char t[1024];
    snprintf(t, sizeof t, "{%s}", mis);
    CHECK(load_text(t, &c, &err) == FT_OK, "mistral: %s", err.what);
    CHECK(c.window[0] == 4096 && c.window[1] == 4096 && c.Hkv == 8, "mistral defaults");
    model_config_free(&c);
    snprintf(t, sizeof t, "{%s, \"sliding_window\": null, \"num_key_value_heads\": null}", mis);
    CHECK(load_text(t, &c, &err) == FT_OK, "mistral null");
    CHECK(c.window[0] == 0 && c.window[1] == 0 && c.Hkv == 16 && c.H == 16,
          "mistral null window, Hkv = H");
    model_config_free(&c);
    snprintf(t, sizeof t, "{%s, \"sliding_window\": 32, \"num_key_value_heads\": 2}", mis);
    CHECK(load_text(t, &c, &err) == FT_OK, "mistral 32");
    CHECK(c.window[0] == 32 && c.window[1] == 32 && c.Hkv == 2, "mistral window 32");
    model_config_free(&c);
    /* Qwen2 windows: max_window_layers, then explicit layer_types */
    const char *qw = "\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64, "
                     "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, "
                     "\"num_key_value_heads\": 2, \"intermediate_size\": 96, \"vocab_size\": 128";
    snprintf(t, sizeof t,
             "{%s, \"use_sliding_window\": true, \"sliding_window\": 8, "
             "\"max_window_layers\": 1}",
             qw);
    CHECK(load_text(t, &c, &err) == FT_OK, "qwen2 window: %s", err.what);
    CHECK(c.window[0] == 0 && c.window[1] == 8 && c.window[2] == 8, "layers >= max_window_layers");
    model_config_free(&c);
    snprintf(t, sizeof t,
             "{%s, \"use_sliding_window\": true, \"sliding_window\": 8, \"layer_types\": "
             "[\"sliding_attention\", \"full_attention\", \"sliding_attention\"]}",
             qw);
    CHECK(load_text(t, &c, &err) == FT_OK, "qwen2 layer_types: %s", err.what);
    CHECK(c.window[0] == 8 && c.window[1] == 0 && c.window[2] == 8, "layer_types");
    model_config_free(&c);
    snprintf(t, sizeof t,
             "{%s, \"use_sliding_window\": false, \"sliding_window\": 8, \"layer_types\": "
             "[\"sliding_attention\", \"full_attention\", \"sliding_attention\"]}",
             qw);
    CHECK(load_text(t, &c, &err) == FT_OK, "qwen2 layer_types, off");
    CHECK(c.window[0] == 0 && c.window[2] == 0, "use_sliding_window false wins");
    model_config_free(&c);
    /* Qwen3: head_dim absent -> 128 (class default), attention_bias -> q,k,v,o */
    CHECK(load_text("{\"architectures\": [\"Qwen3ForCausalLM\"], \"hidden_size\": 64, "
                    "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                    "\"num_key_value_heads\": 2, \"intermediate_size\": 96, \"vocab_size\": 128, "
                    "\"attention_bias\": true}",
                    &c, &err) == FT_OK,
          "qwen3: %s", err.what);
    CHECK(c.D == 128 && c.rot_dim == 128 && c.arch->qk_norm, "Qwen3 head_dim default 128");
    CHECK(c.attn_bias && c.o_bias && !c.mlp_bias, "Qwen3 attention_bias");
    model_config_free(&c);
}

static void test_names(void) {
    char b[128];
    weight_name(b, sizeof b, 3, LIN_Q, "weight");
    CHECK(!strcmp(b, "model.layers.3.self_attn.q_proj.weight"), "%s", b);
    weight_name(b, sizeof b, 0, LIN_QKV, "weight");
    CHECK(!strcmp(b, "model.layers.0.self_attn.qkv_proj.weight"), "%s", b);
    weight_name(b, sizeof b, 11, LIN_O, "bias");
    CHECK(!strcmp(b, "model.layers.11.self_attn.o_proj.bias"), "%s", b);
    weight_name(b, sizeof b, 2, LIN_GATE_UP, "weight");
    CHECK(!strcmp(b, "model.layers.2.mlp.gate_up_proj.weight"), "%s", b);
    weight_name(b, sizeof b, 2, LIN_DOWN, "weight");
    CHECK(!strcmp(b, "model.layers.2.mlp.down_proj.weight"), "%s", b);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-cfg-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_errors();
    test_rope();
    test_defaults_and_windows();
    test_names();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("config");
}
