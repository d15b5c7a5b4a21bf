// SECDED (39,32) encoder -> flip mask -> decoder, for checking the generated Verilog
// against hal.codec. Combinational: Python sets `data` and `flip`, waits, reads.
`timescale 1ns/1ps
`default_nettype none
module secded_tb ();
    reg  [31:0] data = 0;
    reg  [38:0] flip = 0;
    wire [38:0] codeword;
    wire [31:0] decoded;
    wire [1:0]  status;
    secded39_enc u_enc (.data(data), .codeword(codeword));
    secded39_dec u_dec (.codeword(codeword ^ flip), .data(decoded), .status(status));
endmodule
