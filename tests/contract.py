"""The analysis variables and attributes every analysis must carry (its public contract)."""

CONTRACT_NEURON = ["freq_a", "freq_b", "freq_out", "phase_a", "phase_b", "phase_out", "amp_a", "amp_b", "amp_out",
                   "periodicity_a", "periodicity_b", "periodicity_out", "ipr_a", "ipr_b", "ipr_out", "square_dist_a", "cosine_dist_a", "square_dist_b",
                   "cosine_dist_b", "binarization_a", "binarization_b", "boundary_frac_a", "boundary_frac_b", "freq_agree",
                   "phase_sum_error", "structured", "unstructured"]
CONTRACT_STEP = ["r_all", "r_structured", "phase_sum_coherence", "n_structured", "n_unstructured", "periodicity_median",
                 "binarization_median", "square_vs_cosine_t", "ideal_acc", "ideal_acc_sq_sq", "ideal_acc_cos_cos",
                 "ideal_acc_phase_sum", "ideal_acc_shuffled", "ideal_acc_shuffled_hi", "ideal_acc_own", "restricted_loss",
                 "excluded_loss"]
# lead_steps / lead_steps_own are present only when grok and structure steps are both reached
CONTRACT_ATTRS = ["saturation_step", "grok_step", "structure_step", "structure_step_own", "shuffle_draws", "key_freqs",
                  "key_freqs_rule", "progress_pairs", "threshold", "threshold_low", "source"]
