// Watchdog: counts down from `timeout`; `kick` (a write to WDT_KICK) or `reload` (a write
// to WDT_TIMEOUT) starts it again; reaching the end pulses `fire` (the chip then resets its
// engines) and starts again. `timeout` 0 turns it off. `expiries` saturates at 65535.
`default_nettype none
module watchdog (
    input  wire        clk,
    input  wire        rst,
    input  wire [31:0] timeout,
    input  wire        kick,
    input  wire        reload,
    output reg         fire,
    output reg  [15:0] expiries
);
    reg [31:0] count;
    always @(posedge clk) begin
        fire <= 1'b0;
        if (rst) begin
            count <= 0;
            expiries <= 0;
        end else if (timeout == 0) count <= 0;
        else if (kick || reload || count == 0) count <= timeout;
        else if (count == 1) begin
            count <= timeout;
            fire <= 1'b1;
            if (~&expiries) expiries <= expiries + 1'b1;
        end else count <= count - 1'b1;
    end
endmodule
