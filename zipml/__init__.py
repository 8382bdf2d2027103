"""ZipML: low-precision SGD with double sampling, on open FPGA hardware."""
