"""Packed QMC artifacts: save a quantized model in the layout the hardware would hold, load it back
bit-exact, verify it, run it, and hand it to other tools.

Layout of an artifact directory (format ``qmc-edge-artifact`` version 1)::

    manifest.json        provenance, method options, per-tensor layout, per-file size + sha256;
                         written last, with a sha256 of its own canonical JSON (``checksum``)
    reram.safetensors    per ReRAM tensor: uint8 image of its cell levels, ceil(b/c) cells per
                         code (MSB cell first, see qmc_edge.memory.cells), each level packed at c bits
    codes.safetensors    per ideal-memory tensor (rtn, mxint4): codes packed at b bits
    meta.safetensors     <name>.scale: fp16, fp32 or int8 power-of-two exponents (E8M0), whichever
                         holds the in-memory scales exactly; <name>.zero: integer zero points
                         packed at their bits, real-valued ones (HQQ) in fp16/fp32 exactly, absent
                         for a fixed zero point (its value is in the manifest)
    mram.safetensors     outlier table: <name>.outlier_codes (symmetric codes + 2**(b-1), packed
                         at b bits), CSR positions <name>.outlier_counts (per row,
                         ceil(log2(in+1)) bits) and <name>.outlier_cols (per outlier,
                         ceil(log2(in)) bits), <name>.outlier_scale (float64, the exact value);
                         <name>.level_map: the code-to-level permutation (logical code -> physical
                         code at b bits each) when the tensor has one (qmc_edge.quant.level_map)
    dense.safetensors    unquantized tensors (embeddings, norms, head; tied ones once; as the
                         method left them, e.g. AWQ's folded norms) in ``dense_dtype`` (fp16 by
                         default, as the storage report counts them)
    config.json, generation_config.json, tokenizer files: as transformers writes them

Packing is MSB first, values back to back, zero-padded to a byte at the end of each array, so a
tensor file is the storage report's bit count rounded up per array plus the safetensors header.

May import :mod:`qmc_edge.methods`, :mod:`qmc_edge.quant`, :mod:`qmc_edge.memory` and the root.
"""

from qmc_edge.artifact.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME"]
