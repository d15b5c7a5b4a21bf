"""FPGA flow: Verilog generated from the ICD and H-matrix, synthesis, netlist lists."""
