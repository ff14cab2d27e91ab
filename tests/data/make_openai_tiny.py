"""Write tests/data/openai_tiny: a tiny GPT-2 checkpoint in OpenAI's original release layout, made by TensorFlow.

The variables have the names and shapes of openai/gpt-2's model.py (model/wte,
model/h0/attn/c_attn/w of shape [1, in, out], ...), random values, and are saved
with tf.compat.v1.train.Saver as OpenAI's download_model.py files were. The
same values go to values.npz so that tests can check the checkpoint reader
without TensorFlow. Run once, with TensorFlow installed (not a project dependency):

    python tests/data/make_openai_tiny.py tests/data/openai_tiny
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

HPARAMS = {"n_vocab": 96, "n_ctx": 16, "n_embd": 16, "n_head": 2, "n_layer": 3}


def main(out: str) -> None:
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.set_random_seed(0)
    n = HPARAMS["n_embd"]
    normal = tf.compat.v1.random_normal_initializer
    variables = []

    def get(name, shape, init):
        variables.append(tf.compat.v1.get_variable(name, shape, initializer=init))

    def norm(scope):  # gains around 1 and nonzero biases, so that a swapped g/b shows up
        with tf.compat.v1.variable_scope(scope):
            get("g", [n], normal(1.0, 0.1))
            get("b", [n], normal(0.0, 0.1))

    def conv1d(scope, nx, nf):
        with tf.compat.v1.variable_scope(scope):
            get("w", [1, nx, nf], normal(stddev=0.2))
            get("b", [nf], normal(stddev=0.1))

    with tf.compat.v1.variable_scope("model"):
        get("wpe", [HPARAMS["n_ctx"], n], normal(stddev=0.1))
        get("wte", [HPARAMS["n_vocab"], n], normal(stddev=0.2))
        for layer in range(HPARAMS["n_layer"]):
            with tf.compat.v1.variable_scope(f"h{layer}"):
                norm("ln_1")
                with tf.compat.v1.variable_scope("attn"):
                    conv1d("c_attn", n, 3 * n)
                    conv1d("c_proj", n, n)
                norm("ln_2")
                with tf.compat.v1.variable_scope("mlp"):
                    conv1d("c_fc", n, 4 * n)
                    conv1d("c_proj", 4 * n, n)
        norm("ln_f")
    saver = tf.compat.v1.train.Saver(var_list=variables)
    os.makedirs(out, exist_ok=True)
    os.chdir(out)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        values = dict(zip([v.op.name for v in variables], sess.run(variables)))
        saver.save(sess, "model.ckpt", write_meta_graph=False)
    np.savez("values.npz", **{k.replace("/", "."): v for k, v in values.items()})
    with open("hparams.json", "w") as f:
        json.dump(HPARAMS, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
