// iCEBreaker (iCE40 UP5K, 12 MHz oscillator, FTDI UART on channel B) top for the chip.
// A power-on reset holds the chip for 16 cycles; the user button resets it too.
// Green LED: heartbeat. Red LED: an error flag (uncorrectable, watchdog, job error).
`default_nettype none
module icebreaker_top #(
    // The default is the flight bitstream: hardened, link FEC, no debug injection.
    // Bench boards that run injection campaigns build INJECT=1 with HARDEN=1 FEC=0 or
    // HARDEN=0 (HARDEN=1 FEC=1 INJECT=1 does not fit the UP5K; fpga/BOARD.md).
    parameter integer HARDEN = 1,
    parameter integer FEC = 1,
    parameter integer INJECT = 0,
    parameter integer MEM_SPRAM = 1  // data SRAM in SPRAM (0: block RAM, as in simulation)
) (
    input  wire clk,      // 12 MHz
    input  wire btn_n,    // active low
    input  wire rx,       // from the FTDI
    output wire tx,       // to the FTDI
    output wire ledr_n,   // active low
    output wire ledg_n    // active low
);
    reg [3:0] por = 4'd0;
    always @(posedge clk) if (!(&por)) por <= por + 1'b1;
    wire rst = !(&por) || !btn_n;
    wire [2:0] led;

    orbithil_chip #(
        .HARDEN(HARDEN),
        .FEC(FEC),
        .INJECT(INJECT),
        .MEM_SPRAM(MEM_SPRAM),
        .CLKS_PER_BIT(104),  // 12 MHz / 115200 baud
        .MEM_WORDS(2048)
    ) u_chip (
        .clk(clk), .rst(rst), .uart_rx(rx), .uart_tx(tx), .led(led)
    );

    assign ledg_n = !led[0];
    assign ledr_n = !led[2];
endmodule
